"""Benchmark of the process runtime and agent, through the local Python API (no server).

    .venv/bin/python bench/bench_sandbox.py [--idle 200] [--json bench/results/sandbox.json]

Prints p50/p99 per operation and writes JSON. Targets (2 cores): session round trip p50 <= 1 ms,
session creation <= 20 ms, cold start p50 <= 150 ms, reset <= 50 ms, >= 2,000 commands/s over
8 sessions, idle sandbox <= 15 MiB.
"""
from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tumbler.local import LocalSandbox
from tumbler.runtime.process import ProcessRuntime
from timing import pct, timed


def bench_round_trip(sb) -> list[float]:
    sb.run("true")
    return timed(lambda: sb.run("echo hi"), 2000)


def bench_session_create(sb) -> list[float]:
    names = iter(range(10**6))
    return timed(lambda: sb.session(f"s{next(names)}"), 100)


def bench_exec(sb) -> list[float]:
    return timed(lambda: sb.exec(["true"]), 200)


def bench_cold_start(rt) -> list[float]:
    def once():
        sb = LocalSandbox(image="debian", runtime=rt)
        sb.run("true")
        marks.append(sb)
    marks: list = []
    xs = timed(once, 30)
    for sb in marks:
        sb.remove()
    return xs


def bench_reset(sb) -> tuple[list[float], list[float]]:
    """(reset call, reset to the first command's result), seconds."""
    calls: list[float] = []
    firsts: list[float] = []
    for _ in range(30):
        sb.run("echo x > /root/f")
        t = time.perf_counter()
        sb.reset()
        calls.append(time.perf_counter() - t)
        sb.run("true")
        firsts.append(time.perf_counter() - t)
    return calls, firsts


def bench_parallel(sb, sessions: int = 8, seconds: float = 3.0) -> float:
    ss = [sb.session(f"p{i}") for i in range(sessions)]
    counts = [0] * sessions
    stop = time.perf_counter() + seconds

    def loop(i):
        while time.perf_counter() < stop:
            ss[i].run("echo hi")
            counts[i] += 1
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t)


def mem_available() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def bench_idle(rt, n: int) -> dict:
    before = mem_available()
    t = time.perf_counter()
    boxes: list[LocalSandbox] = []
    try:
        for _ in range(n):
            boxes.append(LocalSandbox(image="debian", runtime=rt))
            boxes[-1].run("true")
        started = time.perf_counter() - t
        time.sleep(1)
        per_box_host = (before - mem_available()) / n
        cgroup = statistics.median(sb.stats().memory_bytes for sb in boxes)
    finally:
        for sb in boxes:
            sb.remove()
    return {"sandboxes": n, "start_all_s": started, "host_bytes_per_sandbox": per_box_host,
            "cgroup_bytes_per_sandbox_p50": cgroup,
            "fit_in_24gib": int((24 << 30) / max(per_box_host, 1))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=200, help="idle sandboxes for the memory figure")
    ap.add_argument("--json", default="bench/results/sandbox.json")
    args = ap.parse_args()
    rt = ProcessRuntime()
    results: dict = {}
    with LocalSandbox(image="debian", runtime=rt) as sb:
        results["session round trip (echo hi)"] = bench_round_trip(sb)
        results["session create"] = bench_session_create(sb)
        results["exec one-shot (true)"] = bench_exec(sb)
    results["cold start to first command"] = bench_cold_start(rt)
    with LocalSandbox(image="debian", runtime=rt) as sb:
        results["reset"], results["reset to first command"] = bench_reset(sb)
    with LocalSandbox(image="debian", runtime=rt, cpus=2) as sb:
        rate = bench_parallel(sb)
    idle = bench_idle(rt, args.idle)

    table = Table("operation", "n", "p50 ms", "p99 ms")
    out = {}
    for name, xs in results.items():
        out[name] = {"n": len(xs), "p50_ms": pct(xs, .5) * 1e3, "p99_ms": pct(xs, .99) * 1e3}
        table.add_row(name, str(len(xs)), f"{out[name]['p50_ms']:.2f}", f"{out[name]['p99_ms']:.2f}")
    out["8 sessions in parallel, commands/s"] = rate
    out["idle"] = idle
    console = Console()
    console.print(table)
    console.print(f"8 sessions in parallel: {rate:,.0f} commands/s")
    console.print(f"{idle['sandboxes']} idle sandboxes: started in {idle['start_all_s']:.1f} s, "
                  f"{idle['host_bytes_per_sandbox'] / 2**20:.1f} MiB each on the host "
                  f"(cgroup p50 {idle['cgroup_bytes_per_sandbox_p50'] / 2**20:.1f} MiB); "
                  f"~{idle['fit_in_24gib']:,} fit in 24 GiB")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
