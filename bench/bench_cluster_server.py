"""The server in cluster mode beside the single-node server, in one sitting: session round trip
and the 8-session aggregate through the SDK.

    .venv/bin/python bench/bench_cluster_server.py [--seconds 3] [--windows 4] [--round-trips 300]

Starts a one-node Ray cluster (127.0.0.1, the `tumbler_host` resource, usage stats off) in this
process, then three `tumbler serve` subprocesses: one single-node (this machine's runtime), and
two with `ray` = that cluster's address (sandboxes on a node host of their own): *cluster*
reaches each agent through its node host's relay (one TCP connection per sandbox, the default),
*ray* sends every agent op as a Ray actor call (`cluster.direct_agents` off; as before the
relay). In each: 8 sandboxes, a session in each. Figures: one command's round trip
(p50, p99; sequential `run("echo hi")`), and commands/s of 8 sessions each running `echo` back to
back, taken in alternating windows (single, cluster, single, ...: load from elsewhere falls on
both alike), and the ratios cluster / single and ray / single. Writes bench/results/cluster_server.json. Needs root
and the "debian" image.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # Ray's node on 127.0.0.1

import ray  # noqa: E402

from bench_burst import TOKEN, start_server  # noqa: E402
from bench_cluster import reap_children  # noqa: E402
from timing import echo_window as window, pct  # noqa: E402
from tumbler.sdk import AsyncClient, AsyncSandbox  # noqa: E402

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")
RESULTS = Path(__file__).parent / "results" / "cluster_server.json"
SESSIONS = 8


async def round_trip(session, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await session.run("echo hi")
        out.append(time.perf_counter() - t)
    return out


async def measure(urls: dict[str, str], seconds: float, windows: int, trips: int) -> dict:
    clients = {m: AsyncClient(u, TOKEN) for m, u in urls.items()}
    boxes: dict[str, list] = {}
    try:
        sessions = {}
        for mode, client in clients.items():
            boxes[mode] = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client, memory="128m")
                                                 for _ in range(SESSIONS)))
            sessions[mode] = await asyncio.gather(*(sb.session("bench") for sb in boxes[mode]))
            await window(sessions[mode], 0.5)     # warm up
        res: dict = {}
        for mode in clients:
            rt = await round_trip(sessions[mode][0], trips)
            res[f"{mode}_round_trip_p50_ms"] = pct(rt, 0.5) * 1e3
            res[f"{mode}_round_trip_p99_ms"] = pct(rt, 0.99) * 1e3
        rates: dict[str, list[float]] = {m: [] for m in clients}
        for _ in range(windows):
            for mode in clients:
                rates[mode].append(await window(sessions[mode], seconds))
        for mode, xs in rates.items():
            res[f"{mode}_aggregate_{SESSIONS}_sessions_cmds_per_s"] = sum(xs) / len(xs)
        for mode in clients:
            if mode != "single":
                res[f"{mode}_over_single_aggregate"] = (
                    res[f"{mode}_aggregate_{SESSIONS}_sessions_cmds_per_s"]
                    / res[f"single_aggregate_{SESSIONS}_sessions_cmds_per_s"])
                res[f"{mode}_added_round_trip_ms"] = (res[f"{mode}_round_trip_p50_ms"]
                                                      - res["single_round_trip_p50_ms"])
        return res
    finally:
        for mode, bs in boxes.items():
            await asyncio.gather(*(sb.remove() for sb in bs), return_exceptions=True)
        for client in clients.values():
            await client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each rate window")
    ap.add_argument("--windows", type=int, default=4, help="windows per mode, alternating")
    ap.add_argument("--round-trips", type=int, default=300)
    args = ap.parse_args()
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER: see reap_children
    ray_dir = tempfile.mkdtemp(prefix="ray-bench-")
    ray.init(address="local", num_cpus=2, resources={"tumbler_host": 2}, include_dashboard=False,
             log_to_driver=False, _temp_dir=ray_dir)
    address = ray.get_runtime_context().gcs_address
    procs = []
    try:
        with tempfile.TemporaryDirectory(prefix="tumbler-bench-cs-") as state:
            urls = {}
            modes = (("single", {}), ("cluster", {"ray": address}),
                     ("ray", {"ray": address, "cluster": {  # a host of its own on the node
                         "direct_agents": False, "namespace": "tumbler-bench-ray",
                         "default_name": "via-ray"}}))
            for mode, extra in modes:
                os.makedirs(f"{state}/{mode}")
                proc, urls[mode] = start_server(f"{state}/{mode}", extra)
                procs.append(proc)
            res = asyncio.run(measure(urls, args.seconds, args.windows, args.round_trips))
            for proc in procs:
                proc.terminate()
                proc.wait(120)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        ray.shutdown()
        reap_children()
        shutil.rmtree(ray_dir, ignore_errors=True)
    res.update(host=platform.node(), cores=os.cpu_count(), seconds=args.seconds,
               windows=args.windows, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(json.dumps(res, indent=2))
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
