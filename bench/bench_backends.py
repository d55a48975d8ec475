"""The process and docker runtimes side by side, in one run, through the local Python API.

    .venv/bin/python bench/bench_backends.py [--n 20] [--json bench/results/backends.json]

Cold start (create + start + first command result), reset (back to the image, through the
first command after it) and a session round trip (`echo hi`), p50/p99 in milliseconds per
backend, and the ratio docker/process of the p50s. The docker backend uses the engine that
`DOCKER_HOST` or scripts/podman-service.sh provides, with the store's image imported into it.
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

from tumbler.local import LocalSandbox
from timing import pct, timed

log = logging.getLogger("bench_backends")
IMAGE = "debian"


def cold_start(rt, n: int) -> list[float]:
    made: list[LocalSandbox] = []

    def once():
        sb = LocalSandbox(image=IMAGE, runtime=rt)
        made.append(sb)
        sb.run("true")
    try:
        return timed(once, n)
    finally:
        for sb in made:
            sb.remove()


def reset(rt, n: int) -> list[float]:
    with LocalSandbox(image=IMAGE, runtime=rt) as sb:
        sb.run("true")

        def once():
            sb.reset()
            sb.run("true")
        return timed(once, n)


def round_trip(rt, n: int) -> list[float]:
    with LocalSandbox(image=IMAGE, runtime=rt) as sb:
        sb.run("true")
        return timed(lambda: sb.run("echo hi"), n)


def runtimes() -> dict:
    from tumbler.runtime.container_images import to_engine
    from tumbler.runtime.docker import DockerRuntime
    from tumbler.runtime.process import ProcessRuntime
    process = ProcessRuntime()
    docker = DockerRuntime()
    if not docker.api.images(name=IMAGE):
        log.info("importing image %s into the engine", IMAGE)
        to_engine(docker.client, process.images, IMAGE)
    return {"process": process, "docker": docker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="samples of cold start and reset")
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--json", type=Path, default=Path("bench/results/backends.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    benches = {"cold start to first command": lambda rt: cold_start(rt, args.n),
               "reset (to first command after)": lambda rt: reset(rt, args.n),
               "session round trip (echo)": lambda rt: round_trip(rt, args.round_trips)}
    results: dict = {}
    for backend, rt in runtimes().items():
        for what, bench in benches.items():
            xs = bench(rt)
            results.setdefault(what, {})[backend] = {"p50_ms": pct(xs, 0.5) * 1e3,
                                                     "p99_ms": pct(xs, 0.99) * 1e3, "n": len(xs)}
    table = Table("operation", "process p50 / p99 ms", "docker p50 / p99 ms", "docker/process")
    for what, by in results.items():
        by["ratio_docker_process_p50"] = by["docker"]["p50_ms"] / by["process"]["p50_ms"]
        table.add_row(what, *(f"{by[b]['p50_ms']:.1f} / {by[b]['p99_ms']:.1f}" for b in ("process", "docker")),
                      f"{by['ratio_docker_process_p50']:.1f}x")
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.time(), "host": platform.node(),
                                     "results": results}, indent=1))
    log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
