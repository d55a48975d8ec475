"""A burst of creates through the server: N sandboxes asked for at once, each to its first command.

    .venv/bin/python bench/bench_burst.py [--n 1000] [--warm] [--memory 128m] [--cpus 0.1]
        [--cold-starts 100000 --label ungated]     # the same burst without the arrival-order gate
        [--nodes 4]                                # cluster mode over a local Ray cluster of 4 nodes
        [--warm --without spare]                   # a warm burst as before the spare bash

Starts `tumbler serve` (its own state dir, a free port, auth on) in a subprocess, then N
coroutines at once each create a sandbox through the async SDK and run `echo ready` in it. Per
sandbox it records when the create answered and when the first command answered, counted from
the burst's start; prints the first, median and last of both, the errors, and the rate, and
writes bench/results/burst.json (one entry per mode: cold, or --warm: from a warm pool of N
started and full before the burst). Then removes every sandbox and stops the server. Needs root
and the "debian" image.

With `--nodes K` the server runs in cluster mode (`ray` set) over a Ray cluster of K nodes on
this machine (`ray.cluster_utils.Cluster`: a head without sandboxes and K nodes offering
`tumbler_host`), so the same burst goes through placement and the node hosts; on one machine
the K nodes share its cores, so this measures the cluster path's cost, not more capacity.

`--without spare` turns off, in the server it starts, what made a warm burst fast, to compare
in one sitting: pooled sandboxes handed over with a spare bash that the first command's default
session takes (without it, that command starts bash).

What it judges: the server serves a burst in arrival order (a sandbox answers as soon as it is
made, so the median is about half the last) at the rate the machine allows.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tumbler.sdk import AsyncClient, AsyncSandbox
from timing import pct

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")
TOKEN = "bench-token"
RESULTS = Path(__file__).parent / "results" / "burst.json"
POOL = "burst"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 900.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What --without turns off in the server, as code run before it starts.
WITHOUT = {
    "spare": "import tumbler.ops as o; o.session_prestart = lambda **_: o.Op('health')",
}


def start_server(state_dir: str, extra: dict, without: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {"port": port, "state_dir": state_dir, "tokens": [TOKEN], "log_level": "warning",
              "node_memory_bytes": 256 << 30, **extra}
    code = "".join(WITHOUT[w] + "; " for w in without) + (
        "import sys; from tumbler.cli.serve import run; from tumbler.server.config import "
        "ServerConfig; run(ServerConfig.model_validate_json(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def start_cluster(nodes: int):
    """A Ray cluster of `nodes` sandbox nodes on this machine (loopback only)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster
    ray_constants.ENABLE_RAY_CLUSTER = False
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    for i in range(nodes):   # names of this run: a host reclaims what carries its id
        cluster.add_node(num_cpus=1, resources={"tumbler_host": 1}, node_ip_address="127.0.0.1",
                         labels={"tumbler-host": f"burst{i}-{os.getpid()}"})
    return cluster


async def fill_pool(client: AsyncClient, n: int, spec: dict, timeout_s: float) -> float:
    """Make pool POOL of `n` to `spec` and wait until it is full; returns the seconds it took."""
    t = time.perf_counter()
    await client.set_pool(POOL, n, IMAGE, **spec)
    deadline = time.monotonic() + timeout_s
    while (ready := next(p.ready for p in await client.pools() if p.name == POOL)) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the pool held {ready} of {n} after {timeout_s} s")
        await asyncio.sleep(0.5)
    return time.perf_counter() - t


async def burst(client: AsyncClient, n: int, spec: dict) -> tuple[dict, list[AsyncSandbox]]:
    created, answered, errors, boxes = [], [], [], []
    t0 = time.perf_counter()

    async def one() -> None:
        try:
            sb = await AsyncSandbox.create(IMAGE, client=client, **spec)
        except Exception as exc:
            errors.append(f"create: {type(exc).__name__}: {exc}")
            return
        boxes.append(sb)
        created.append(time.perf_counter() - t0)
        try:
            out = await sb.run("echo ready")
            if out.output.strip() != "ready":
                raise RuntimeError(f"output {out.output!r}")
        except Exception as exc:
            errors.append(f"command: {type(exc).__name__}: {exc}")
            return
        answered.append(time.perf_counter() - t0)
    await asyncio.gather(*(one() for _ in range(n)))
    total = time.perf_counter() - t0
    res = {"n": n, "errors": len(errors), "error_sample": errors[:3], "all_s": total}
    for name, xs in (("create_answer", created), ("first_command", answered)):
        if xs:
            res[f"{name}_first_s"] = min(xs)
            res[f"{name}_median_s"] = pct(xs, 0.5)
            res[f"{name}_last_s"] = max(xs)
    res["sandboxes_per_s"] = len(answered) / total if total else 0.0
    return res, boxes


async def run(url: str, n: int, warm: bool, spec: dict) -> dict:
    async with AsyncClient(url, TOKEN) as client:
        res = {}
        try:
            if warm:
                res["pool_fill_s"] = await fill_pool(client, n, spec, timeout_s=max(120.0, n * 1.0))
            out, boxes = await burst(client, n, spec)
            res.update(out)
            t = time.perf_counter()
            await asyncio.gather(*(sb.remove() for sb in boxes), return_exceptions=True)
            res["remove_all_s"] = time.perf_counter() - t
        finally:
            if warm:   # its sandboxes go now, not in the server's shutdown (which has a bound)
                await client.remove_pool(POOL)
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="sandboxes asked for at once")
    ap.add_argument("--warm", action="store_true", help="from a warm pool of N (filled first)")
    ap.add_argument("--memory", default="128m")
    ap.add_argument("--cpus", type=float, default=0.1)
    ap.add_argument("--cold-starts", type=int, default=None,
                    help="the server's cold_starts (default: its own, two per core); a large "
                         "number (100000) lets every create of the burst go at once, as before "
                         "the arrival-order gate")
    ap.add_argument("--nodes", type=int, default=0, help="cluster mode over a local Ray cluster "
                    "of this many nodes (0: the server alone, single-node mode)")
    ap.add_argument("--without", default="", help="comma-separated, of: " + ", ".join(WITHOUT)
                    + " (see above): the server without them, to compare")
    ap.add_argument("--label", default="", help="a name for this sitting in the results file")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args()
    without = tuple(w for w in args.without.split(",") if w)
    if unknown := set(without) - set(WITHOUT):
        ap.error(f"--without: unknown {', '.join(sorted(unknown))}; known: {', '.join(WITHOUT)}")
    spec = {"memory": args.memory, "cpus": args.cpus}
    cluster = start_cluster(args.nodes) if args.nodes else None
    extra = {"cold_starts": args.cold_starts} if args.cold_starts else {}
    if cluster is not None:
        extra["ray"] = cluster.address
    try:
        with tempfile.TemporaryDirectory(prefix="tumbler-bench-burst-") as state:
            proc, url = start_server(state, extra, without)
            try:
                res = asyncio.run(run(url, args.n, args.warm, spec))
            finally:
                proc.send_signal(signal.SIGTERM)
                try:   # a graceful stop removes what is left: 1,000 sandboxes take minutes here
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    print(f"server did not stop within {STOP_TIMEOUT_S} s: killed; its sandboxes "
                          "may be left (tumbler local ls)", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.shutdown()
    mode = "warm" if args.warm else "cold"
    res.update(mode=mode, nodes=args.nodes or "single", load=os.getloadavg(),
               cold_starts=args.cold_starts or "default", without=list(without), memory=args.memory, cpus=args.cpus, cores=os.cpu_count(),
               host=platform.node(), when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(json.dumps(res, indent=2))
    if not args.no_save:
        saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        saved[f"{mode}_{args.n}{'_' + args.label if args.label else ''}"] = res
        RESULTS.write_text(json.dumps(saved, indent=2) + "\n")


if __name__ == "__main__":
    main()
