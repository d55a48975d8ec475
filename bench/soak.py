"""Soak the process runtime standalone and draw its memory and fd curves.

    python bench/soak.py --seconds 300 [--batch 8]

Creates, uses (a command, a file round trip, a reset for one in four) and removes sandboxes in
batches for the given time, sampling this process's RSS and open fds once a second. Prints a
table, writes bench/results/soak.json and docs/soak.png, and sets the soak line of
docs/RELIABILITY.md. matplotlib is needed for the figure only (a bench-only dependency).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "security"), str(ROOT / "tests")]

import soak_loop  # noqa: E402
from checks import IMAGE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"
FIGURE = ROOT / "docs" / "soak.png"
RELIABILITY = ROOT / "docs" / "RELIABILITY.md"
SOAK_LINE_TAG = "<!-- soak -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--batch", type=int, default=8, help="sandboxes alive at once")
    ap.add_argument("--no-doc", action="store_true", help="leave docs/RELIABILITY.md as it is")
    args = ap.parse_args()

    from tumbler.runtime.process import ProcessRuntime
    runtime = ProcessRuntime()
    began = time.strftime("%Y-%m-%d %H:%M")
    result = soak_loop.run(runtime, IMAGE, args.seconds, args.batch,
                           on_sample=lambda s: print(f"\r{s.t:7.0f} s  {s.sandboxes:6d} sandboxes  "
                                                     f"RSS {s.rss_kb / 1024:6.1f} MiB  fds {s.fds:4d}",
                                                     end="", flush=True))
    print()
    left = soak_loop.leftovers_of(runtime, result.ids())
    rss0, rss1 = result.quarters("rss_kb")
    fd0, fd1 = result.quarters("fds")
    flat = result.flat()
    rows = [("duration", f"{args.seconds:.0f} s"), ("sandboxes", str(result.sandboxes)),
            ("batch", str(args.batch)), ("errors", str(len(result.errors))),
            ("RSS first/last quarter median", f"{rss0 / 1024:.1f} / {rss1 / 1024:.1f} MiB"),
            ("open fds first/last quarter median", f"{fd0:.0f} / {fd1:.0f}"),
            ("leftovers", str(len(left))), ("flat", "yes" if not flat else "; ".join(flat))]
    for k, v in rows:
        print(f"{k:36s} {v}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"began": began, "seconds": args.seconds, "batch": args.batch,
                                   "sandboxes": result.sandboxes, "errors": result.errors[:20],
                                   "leftovers": left, "flat_problems": flat,
                                   "samples": [asdict(s) for s in result.samples]}, indent=1))
    _figure(result)
    if not args.no_doc:
        _doc_line(began, args, result, rss0, rss1, fd0, fd1, left, flat)
    return 0 if not (flat or left or result.errors) else 1


def _figure(result: soak_loop.SoakResult) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s.t / 60 for s in result.samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    ax1.plot(t, [s.rss_kb / 1024 for s in result.samples], label="RSS")
    ax1.plot(t, [s.heap_in_use_kb / 1024 for s in result.samples], label="C heap in use")
    ax1.plot(t, [s.heap_free_kb / 1024 for s in result.samples], label="C heap held free")
    ax1.legend(loc="center right", fontsize="small")
    ax1.set_ylabel("MiB")
    ax1.set_ylim(bottom=0)
    ax2.plot(t, [s.fds for s in result.samples], color="tab:orange")
    ax2.set_ylabel("open fds")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("minutes")
    fig.suptitle(f"process runtime soak: {result.sandboxes} sandboxes, {result.batch} at a time")
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)


def _doc_line(began, args, result, rss0, rss1, fd0, fd1, left, flat) -> None:
    """Set the soak row of RELIABILITY.md's table, in place (added at the table's end if none)."""
    heap0, heap1 = result.quarters("heap_in_use_kb")
    line = (f"| soak (process runtime, `python bench/soak.py --seconds "
            f"{args.seconds:.0f} --batch {args.batch}`, {began}) | {args.seconds / 60:.0f} min, "
            f"{result.sandboxes} sandboxes, {len(result.errors)} errors | RSS {rss0 / 1024:.1f} -> "
            f"{rss1 / 1024:.1f} MiB, C heap in use {heap0 / 1024:.1f} -> {heap1 / 1024:.1f} MiB, "
            f"fds {fd0:.0f} -> {fd1:.0f} (first -> last quarter median), "
            f"{len(left)} leftovers: {'flat' if not flat else 'NOT flat'} ([curves](soak.png)) "
            f"{SOAK_LINE_TAG} |")
    lines = RELIABILITY.read_text().splitlines() if RELIABILITY.exists() else []
    at = next((i for i, l in enumerate(lines) if SOAK_LINE_TAG in l), None)
    if at is not None:
        lines[at] = line
    else:
        head = next((i for i, l in enumerate(lines) if l.startswith("| what")), None)
        if head is None:
            lines += ["", "| what | result | figures |", "| --- | --- | --- |", line]
        else:
            end = head
            while end + 1 < len(lines) and lines[end + 1].startswith("|"):
                end += 1
            lines.insert(end + 1, line)
    RELIABILITY.write_text("\n".join(lines).strip("\n") + "\n")

if __name__ == "__main__":
    sys.exit(main())
