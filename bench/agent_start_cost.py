"""What one sandbox's start costs inside it: its agent's CPU and memory, and its first ops.

    .venv/bin/python bench/agent_start_cost.py [--n 10] [--cpus 0.1]

Per sandbox (made one after another through the process runtime, `debian` image, 128 MiB):
the time from `start` to the agent's answer to `session.prestart` (what a warm pool waits
for), the sandbox cgroup's CPU one second after start (runc's init, the agent, its spare bash)
and its memory then; and, on fresh `LocalSandbox`es at 1 CPU, the first and second `run`,
`exec` and file write+read (a first op pays its module's import). Prints medians. Needs root.
"""
from __future__ import annotations

import argparse
import statistics
import time

from tumbler.agentclient.blocking import AgentClient
from tumbler.local import LocalSandbox
from tumbler.runtime import cgroups
from tumbler.runtime.process import ProcessRuntime
from tumbler.runtime.spec import Limits, SandboxSpec

IMAGE = "debian"
SETTLE_S = 1.0


def start_costs(rt: ProcessRuntime, n: int, cpus: float) -> dict[str, float]:
    ready, cpu, mem = [], [], []
    for _ in range(n):
        info = rt.create(SandboxSpec(image=IMAGE, limits=Limits(cpus=cpus, memory=128 << 20)))
        try:
            t0 = time.monotonic()
            rt.start(info.id)
            client = AgentClient(rt.agent_socket(info.id))
            try:
                client.call("session.prestart", {"env": {}, "cwd": "/root"})
                ready.append(time.monotonic() - t0)
                time.sleep(SETTLE_S)
                cpu.append(cgroups.cpu_seconds(f"tumbler/{info.id}"))
                mem.append(cgroups.memory_bytes(f"tumbler/{info.id}"))
            finally:
                client.close()
        finally:
            rt.remove(info.id)
    return {f"start -> prestart answered, {cpus:g} CPU (ms)": statistics.median(ready) * 1e3,
            f"sandbox CPU {SETTLE_S:g} s after start (ms)": statistics.median(cpu) * 1e3,
            "sandbox memory then (MiB)": statistics.median(mem) / 2**20}


def first_ops(n: int) -> dict[str, float]:
    ops = {"run": lambda sb: sb.run("true"), "exec": lambda sb: sb.exec(["true"]),
           "write+read": lambda sb: (sb.write_file("/tmp/x", b"hi"), sb.read_bytes("/tmp/x"))}
    times: dict[str, list[float]] = {}
    for _ in range(n):
        sb = LocalSandbox(image=IMAGE)
        try:
            for name, op in ops.items():
                for which in ("first", "second"):
                    t = time.perf_counter()
                    op(sb)
                    times.setdefault(f"{which} {name} (ms)", []).append(time.perf_counter() - t)
        finally:
            sb.remove()
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--cpus", type=float, default=0.1)
    args = ap.parse_args()
    rows = {**start_costs(ProcessRuntime(), args.n, args.cpus), **first_ops(args.n)}
    for k, v in rows.items():
        print(f"{k:45s} {v:8.1f}")


if __name__ == "__main__":
    main()
