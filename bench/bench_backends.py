"""The process and docker runtimes side by side, in one run, through the local Python API.

    .venv/bin/python bench/bench_backends.py [--n 20] [--json bench/results/backends.json]

Cold start (create + start + first command result), reset (back to the image, through the
first command after it), snapshot (of a sandbox that copied /etc, 482 entries, to a new image)
and a session round trip (`echo hi`), p50/p99 in milliseconds per backend, and the ratios of
the p50s. Backends: process; docker as it comes (on Podman: root inside maps to a host uid
range of its own, its own disk); docker with `userns=False` (root inside is host root), to
show what the user namespace costs. The docker backend uses the engine that `DOCKER_HOST` or
scripts/podman-service.sh provides, with the store's image imported into it.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator

from rich.console import Console
from rich.table import Table

from tumbler.local import LocalSandbox
from timing import pct

log = logging.getLogger("bench_backends")
IMAGE = "debian"
Sampler = Iterator[Callable[[], float]]  # a context that gives one sample (seconds) per call


@contextmanager
def cold_start(rt) -> Sampler:
    def once() -> float:
        t = time.perf_counter()
        sb = LocalSandbox(image=IMAGE, runtime=rt)
        sb.run("true")
        elapsed = time.perf_counter() - t
        sb.remove()
        return elapsed
    yield once


@contextmanager
def reset(rt) -> Sampler:
    with LocalSandbox(image=IMAGE, runtime=rt) as sb:
        sb.run("true")

        def once() -> float:
            t = time.perf_counter()
            sb.reset()
            sb.run("true")
            return time.perf_counter() - t
        yield once


@contextmanager
def snapshot(rt) -> Sampler:
    with LocalSandbox(image=IMAGE, runtime=rt) as sb:
        sb.run("cp -a /etc /root/etc-copy")

        def once() -> float:
            t = time.perf_counter()
            sb.snapshot("bench-snapshot")
            elapsed = time.perf_counter() - t
            if hasattr(rt, "images"):
                rt.images.remove("bench-snapshot")
            else:
                rt.api.remove_image("bench-snapshot", force=True)
            return elapsed
        yield once


@contextmanager
def round_trip(rt) -> Sampler:
    with LocalSandbox(image=IMAGE, runtime=rt) as sb:
        sb.run("true")

        def once() -> float:
            t = time.perf_counter()
            sb.run("echo hi")
            return time.perf_counter() - t
        yield once


def interleaved(sampler, backends: dict, n: int) -> dict[str, list[float]]:
    """n samples per backend, taken in turn (a load that comes and goes hits every backend)."""
    with ExitStack() as stack:
        takers = {b: stack.enter_context(sampler(rt)) for b, rt in backends.items()}
        samples: dict[str, list[float]] = {b: [] for b in takers}
        for _ in range(n):
            for b, take in takers.items():
                samples[b].append(take())
    return samples


def runtimes() -> dict:
    from tumbler.runtime.container_images import to_engine
    from tumbler.runtime.docker import DockerRuntime
    from tumbler.runtime.process import ProcessRuntime
    process = ProcessRuntime()
    docker = DockerRuntime()
    if not docker.api.images(name=IMAGE):
        log.info("importing image %s into the engine", IMAGE)
        to_engine(docker.client, process.images, IMAGE)
    return {"process": process, "docker": docker, "docker, no userns": DockerRuntime(userns=False)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="samples of cold start, reset and snapshot")
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--json", type=Path, default=Path("bench/results/backends.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    benches = {"cold start to first command": (cold_start, args.n),
               "reset (to first command after)": (reset, args.n),
               "snapshot (/etc copied)": (snapshot, args.n),
               "session round trip (echo)": (round_trip, args.round_trips)}
    backends = runtimes()
    results: dict = {}
    for what, (sampler, n) in benches.items():
        for backend, xs in interleaved(sampler, backends, n).items():
            results.setdefault(what, {})[backend] = {"p50_ms": pct(xs, 0.5) * 1e3,
                                                     "p99_ms": pct(xs, 0.99) * 1e3, "n": len(xs)}
    table = Table("operation", *(f"{b} p50 / p99 ms" for b in backends), "docker/process",
                  "docker/no userns")
    for what, by in results.items():
        by["ratio_docker_process_p50"] = by["docker"]["p50_ms"] / by["process"]["p50_ms"]
        by["ratio_userns_p50"] = by["docker"]["p50_ms"] / by["docker, no userns"]["p50_ms"]
        table.add_row(what, *(f"{by[b]['p50_ms']:.1f} / {by[b]['p99_ms']:.1f}" for b in backends),
                      f"{by['ratio_docker_process_p50']:.1f}x", f"{by['ratio_userns_p50']:.2f}x")
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.time(), "host": platform.node(),
                                     "results": results}, indent=1))
    log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
