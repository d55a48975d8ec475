"""Where the CPU of a command goes, through the server and through LocalSandbox: the 8-session
aggregate of bench_server.py in alternating windows, each window's CPU split by process.

    .venv/bin/python bench/server_cpu_split.py [--seconds 6] [--sessions 8]

Per window it prints commands/s and microseconds of CPU per command of the server process,
this client process (the SDK's AsyncClient, or LocalSandbox's threads), every other process
(the sandboxes' agents and bash, kernel threads), the server's user/system split, its
involuntary context switches per command, and the machine's idle CPU-seconds. Nothing is
written; the figures it gave are in docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time

import bench_server as b

TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu() -> dict[int, float]:
    """CPU seconds of every process (its reaped children included)."""
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(pid)] = sum(int(x) for x in f[11:15]) / TCK
    return out


def _user_sys(pid: int) -> tuple[float, float]:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) / TCK, int(f[12]) / TCK


def _involuntary(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("nonvoluntary_ctxt_switches"):
            return int(line.split(":")[1])
    return 0


def _idle_s() -> float:
    f = open("/proc/stat").readline().split()
    return (int(f[4]) + int(f[5])) / TCK


def split(window, server_pid: int) -> str:
    me = os.getpid()
    p0, u0, x0, i0 = _proc_cpu(), _user_sys(server_pid), _involuntary(server_pid), _idle_s()
    c0, t0 = time.process_time(), time.perf_counter()
    rate = window()
    c1, t1 = time.process_time(), time.perf_counter()
    p1, u1, x1, i1 = _proc_cpu(), _user_sys(server_pid), _involuntary(server_pid), _idle_s()
    n = rate * (t1 - t0)

    def us(seconds: float) -> float:
        return 1e6 * seconds / n
    server = p1.get(server_pid, 0) - p0.get(server_pid, 0)
    others = sum(v - p0.get(k, 0) for k, v in p1.items() if k not in (me, server_pid))
    return (f"{rate:6.0f} cmds/s | us/cmd: server {us(server):4.0f} (user {us(u1[0] - u0[0]):.0f}, "
            f"sys {us(u1[1] - u0[1]):.0f}), client {us(c1 - c0):4.0f}, agents+bash+rest "
            f"{us(others):4.0f} | server involuntary switches/cmd {(x1 - x0) / n:.2f} | "
            f"idle {i1 - i0:.2f} CPU-s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to alternate windows")
    ap.add_argument("--sessions", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tumbler-bench-") as state:
        proc, url = b.start_server(state)
        try:
            with b.ServerWindows(url, args.sessions) as server, b.LocalWindows(args.sessions) as local:
                server.window(0.5)
                local.window(0.5)
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    print("server", split(lambda: server.window(1.0), proc.pid))
                    print("local ", split(lambda: local.window(1.0), proc.pid))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


if __name__ == "__main__":
    main()
