"""Benchmark of env stepping: in-process, and hosted in many sandboxes at once.

    .venv/bin/python bench/bench_envs.py [--sandboxes 64] [--seconds 5] [--json bench/results/envs.json]

Prints a table of steps/s per env and writes JSON. Target (2 cores): >= 1,000 steps/s for a
grid game hosted in 64 sandboxes at once.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tumbler import envs
from tumbler.envs.hosted import HostedVectorEnv

GAMES = ["Sokoban-v0", "FrozenLake-v0", "GuessTheNumber-v0", "Countdown-v0"]


def in_process(env_id: str, seconds: float) -> float:
    """Steps per second of one env in this process, random actions, resets included."""
    env = envs.make(env_id)
    env.reset(seed=0)
    steps, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            *_, terminated, truncated, _ = env.step(env.sample_random_action())
            if terminated or truncated:
                env.reset()
        steps += 100
    return steps / (time.perf_counter() - start)


def hosted(env_id: str, n: int, seconds: float) -> dict:
    """Steps per second over `n` sandboxes each hosting the env, stepped together."""
    t = time.perf_counter()
    with HostedVectorEnv(env_id, n=n) as vec:
        ready_s = time.perf_counter() - t
        vec.reset(seed=0)
        actions = [f"\\boxed{{{m}}}" for m in ("up", "down", "left", "right")]
        rounds, latencies = 0, []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            vec.step([actions[(rounds + i) % 4] for i in range(n)])
            latencies.append(time.perf_counter() - t)
            rounds += 1
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"steps_per_s": rounds * n / elapsed, "sandboxes": n, "setup_s": ready_s,
            "vector_step_p50_ms": 1000 * latencies[len(latencies) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sandboxes", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of stepping per figure")
    parser.add_argument("--json", default="bench/results/envs.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = {"machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
               "in_process": {}, "hosted": {}}
    for env_id in GAMES:
        results["in_process"][env_id] = in_process(env_id, args.seconds / 2)
    for env_id in ("FrozenLake-v0", "Sokoban-v0"):
        results["hosted"][env_id] = hosted(env_id, args.sandboxes, args.seconds)

    table = Table(title=f"env steps/s (random actions; hosted = {args.sandboxes} sandboxes at once)")
    for col in ("env", "in-process steps/s", "hosted steps/s", "hosted vector step p50"):
        table.add_column(col, justify="right")
    for env_id in GAMES:
        h = results["hosted"].get(env_id)
        table.add_row(env_id, f"{results['in_process'][env_id]:,.0f}",
                      f"{h['steps_per_s']:,.0f}" if h else "-",
                      f"{h['vector_step_p50_ms']:.1f} ms" if h else "-")
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
