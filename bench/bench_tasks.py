"""Benchmark of the shipped task sets: image builds (cold, cached) and oracle trials per minute.

    .venv/bin/python bench/bench_tasks.py [--sets devops,data,support,swe-mini] [--concurrency 1,4,16]
        [--trials 2] [--no-cold] [--json bench/results/tasks.json]

Cold: the set's build-step images (every `build.*` image its tasks' chains use) are removed
first, so every RUN/COPY runs again (the base images debian/debian-pip stay). Cached: the same
builds again, every step found in the cache. Trials: every task of the set `--trials` times with
its oracle (`tumbler tasks run SET --oracle`), at each concurrency, images cached; a trial is a
sandbox of the task's image, the solution, the snapshot, the pruned verifier sandbox and the
verifier. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tumbler.local import default_runtime
from tumbler.tasks.agents import OracleAgent
from tumbler.tasks.loader import load_tasks
from tumbler.tasks.runner import run_tasks
from tumbler.tasks.trial import task_image


def chain(store, image: str) -> list[str]:
    """The build-step images under `image`, itself first."""
    out = []
    while image and image.startswith("build."):
        out.append(image)
        image = store.get(image).parent
    return out


def drop_cache(store, tasks) -> int:
    """Remove the build-step images of `tasks`' images (children first); how many went."""
    names: set[str] = set()
    for t in tasks:
        try:
            names.update(chain(store, task_image(t, default_runtime())[0]))
        except Exception:   # not built yet: nothing to drop
            continue
    removed = 0
    while names:
        parents = {store.get(n).parent for n in names}
        leaves = [n for n in names if n not in parents]
        for n in leaves:
            store.remove(n)
            names.discard(n)
            removed += 1
    return removed


def build_all(tasks) -> float:
    started = time.perf_counter()
    for t in tasks:
        task_image(t, default_runtime())
    return time.perf_counter() - started


def trials_per_minute(tasks, concurrency: int, k: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix="bench-tasks-") as out:
        started = time.perf_counter()
        results = run_tasks(tasks, OracleAgent(), k=k, concurrency=concurrency, out_dir=Path(out))
        wall = time.perf_counter() - started
    return len(results) / wall * 60, len(results), sum(r.passed for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="devops,data,support")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--trials", type=int, default=2, help="trials per task at each concurrency")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold builds")
    ap.add_argument("--json", default="bench/results/tasks.json")
    args = ap.parse_args()
    store = default_runtime().images
    levels = [int(c) for c in args.concurrency.split(",")]
    rows = []
    for name in args.sets.split(","):
        tasks = load_tasks(name)
        row = {"set": name, "tasks": len(tasks)}
        if not args.no_cold:
            row["dropped_images"] = drop_cache(store, tasks)
            row["build_cold_s"] = round(build_all(tasks), 2)
        row["build_cached_s"] = round(build_all(tasks), 3)
        for c in levels:
            per_min, n, passed = trials_per_minute(tasks, c, args.trials)
            row[f"trials_per_min_c{c}"] = round(per_min, 1)
            row[f"passed_c{c}"] = f"{passed}/{n}"
        rows.append(row)
        Console().print(row)
    table = Table("set", "tasks", "build cold s", "build cached s",
                  *[f"trials/min c={c}" for c in levels], title="task sets, oracle")
    for r in rows:
        table.add_row(r["set"], str(r["tasks"]), str(r.get("build_cold_s", "-")),
                      str(r["build_cached_s"]),
                      *[f"{r[f'trials_per_min_c{c}']} ({r[f'passed_c{c}']})" for c in levels])
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": platform.node(), "cpus": __import__("os").cpu_count(),
                                           "trials_per_task": args.trials, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
