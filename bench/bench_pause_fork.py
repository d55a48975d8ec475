"""Pause, resume and fork, through the local Python API (the runtime the server drives).

    .venv/bin/python bench/bench_pause_fork.py [--n 20] [--forks 1,8,64] [--json bench/results/pause_fork.json]

pause / resume: p50 and p99 in milliseconds of `sb.pause()` and `sb.resume()` (the cgroup
freezer, waited on until the kernel says frozen), for a sandbox at rest and for one with a
process holding `--resident` MiB of touched memory (E2B publishes ~4 s per GiB to pause and
~1 s to resume, because it writes memory out; a freezer keeps it in place, so size should not
matter). fork(n): seconds from `sb.fork(n)` until all n children are running and each has
answered a first command, for a source holding `--files` MiB of written files (what a prepared
task repo costs); files are copied, processes and memory are not.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from timing import pct, timed
from tumbler.local import LocalSandbox

IMAGE = "debian"
HOLD = ("nohup python3 -c \"import time; b = bytearray({n} << 20); "
        "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; time.sleep(3600)\" "
        ">/dev/null 2>&1 &")


def pause_resume(sb: LocalSandbox, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"pause": [], "resume": []}
    for _ in range(n):
        out["pause"] += timed(sb.pause, 1)
        out["resume"] += timed(sb.resume, 1)
    return out


def hold_memory(sb: LocalSandbox, mib: int) -> None:
    sb.run(HOLD.format(n=mib))
    deadline = time.monotonic() + 60
    while sb.stats().memory_bytes < mib << 20:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the sandbox never held {mib} MiB")
        time.sleep(0.2)


def fork_seconds(sb: LocalSandbox, count: int) -> float:
    t = time.perf_counter()
    kids = sb.fork(count)
    try:
        for kid in kids:
            kid.run("true")
        return time.perf_counter() - t
    finally:
        for kid in kids:
            kid.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="pause/resume pairs per case")
    ap.add_argument("--forks", default="1,8,64", help="fork sizes, comma-separated")
    ap.add_argument("--resident", type=int, default=256, help="MiB the busy case holds")
    ap.add_argument("--files", type=int, default=32, help="MiB of files in the fork source")
    ap.add_argument("--json", type=Path, default=Path("bench/results/pause_fork.json"))
    args = ap.parse_args()

    rows, results = [], {"machine": platform.node(), "n": args.n}
    with LocalSandbox(image=IMAGE, memory="1g") as sb:
        sb.run("true")
        for label, mib in (("at rest", 0), (f"{args.resident} MiB resident", args.resident)):
            if mib:
                hold_memory(sb, mib)
            samples = pause_resume(sb, args.n)
            for op, xs in samples.items():
                rows.append((f"{op}, {label}", pct(xs, 0.5) * 1e3, pct(xs, 0.99) * 1e3, "ms"))
                results[f"{op}_{mib}mib_ms"] = {"p50": pct(xs, 0.5) * 1e3, "p99": pct(xs, 0.99) * 1e3}
    with LocalSandbox(image=IMAGE, memory="256m") as sb:
        sb.run(f"mkdir -p /srv/repo && head -c {args.files << 20} /dev/urandom > /srv/repo/blob "
               "&& seq 1 100000 > /srv/repo/lines")
        for count in (int(c) for c in args.forks.split(",")):
            s = fork_seconds(sb, count)
            rows.append((f"fork({count}), {args.files} MiB of files, to all answering",
                         s * 1e3, None, "ms"))
            results[f"fork_{count}_s"] = s

    table = Table(title=f"pause / resume / fork (process runtime, n={args.n})")
    for col in ("what", "p50", "p99", "unit"):
        table.add_column(col)
    for what, p50, p99, unit in rows:
        table.add_row(what, f"{p50:.1f}", "" if p99 is None else f"{p99:.1f}", unit)
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
