"""Agent-layer latency: `echo hi` round trips in a bash session and session creation.

Starts the agent on the host exactly as a sandbox starts it (python3 -I -S, a unix socket) and
talks to it with the host client. Prints a table and writes JSON (--json PATH).

    python bench/agent_bench.py [--rounds 2000] [--json bench-agent.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tumbler.agentclient.blocking import AgentClient  # noqa: E402


def start_agent(directory: str, python: str) -> tuple[subprocess.Popen, str, float]:
    """The agent process, its socket path, and seconds from spawn to the first health reply."""
    path = os.path.join(directory, "agent.sock")
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'src' / 'tumbler')!r}); "
            "from agent.server import main; main()")
    started = time.perf_counter()
    proc = subprocess.Popen([python, "-I", "-S", "-c", code, "--socket", path, "--subreaper"])
    client = AgentClient(path)
    while True:
        try:
            client.call("health", timeout=5)
            break
        except ConnectionError:
            if time.perf_counter() - started > 10:
                proc.kill()
                raise RuntimeError("agent did not start within 10 s")
            time.sleep(0.0005)
    ready = time.perf_counter() - started
    client.close()
    return proc, path, ready


def percentiles(samples: list[float]) -> dict:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e3  # noqa: E731
    return {"n": len(samples), "p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3)}


def timed(fn, rounds: int) -> list[float]:
    out = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000, help="echo round trips")
    parser.add_argument("--sessions", type=int, default=200, help="sessions created")
    parser.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                        else sys.executable, help="interpreter that runs the agent (the image's python3)")
    parser.add_argument("--json", help="write the figures here")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        starts = []
        for _ in range(10):
            proc, path, ready = start_agent(d, opts.python)
            starts.append(ready)
            proc.kill()
            proc.wait()
        proc, path, _ = start_agent(d, opts.python)
        client = AgentClient(path)
        try:
            client.call("session.create", {"name": "bench"})
            run = lambda i: client.call("session.run", {"name": "bench", "command": "echo hi"})  # noqa: E731
            timed(run, 100)  # warm up
            echo = timed(run, opts.rounds)

            def create(i):
                client.call("session.create", {"name": f"s{i}"})
            creates = timed(create, opts.sessions)
            for i in range(opts.sessions):
                client.call("session.close", {"name": f"s{i}"})
        finally:
            client.close()
            proc.kill()
            proc.wait()
    figures = {"agent start to first reply": percentiles(starts),
               "session.run `echo hi`": percentiles(echo),
               "session.create": percentiles(creates)}
    print(f"{'what':32} {'n':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for what, f in figures.items():
        print(f"{what:32} {f['n']:>6} {f['p50_ms']:>9.3f} {f['p99_ms']:>9.3f}")
    if opts.json:
        Path(opts.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
