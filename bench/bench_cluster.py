"""Commands through a NodeHost (Ray actor, batched calls) beside LocalSandbox in this process.

    .venv/bin/python bench/bench_cluster.py [--seconds 5] [--sizes 8 64] [--json bench/results/cluster.json]

One run, one machine: a single-node Ray (127.0.0.1, usage stats off) with a NodeHost on it, and
the same number of LocalSandboxes made here. For each size N: N sandboxes; `echo` in every
one's bash session, as fast as it goes for `--seconds`:
  local    N threads, each `sb.run("echo i")` on its own sandbox (the in-process API);
  cluster  one caller, `ClusterClient.run` over all N at once (one actor call per batch).
  here     a NodeHost in this process (its own event loop thread), one caller, batches of N:
           the host's cost without Ray's.
Aggregate commands/s each, taken in alternating 1 s windows (load from elsewhere falls on
all alike), and the ratio of each to local. `cluster` again with 4 callers, each batching over a
quarter of the sandboxes (batches overlap, as a trainer's rollouts would). Also one command's
round trip (p50) through each: a batch of one against `sb.run`.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # Ray's node on 127.0.0.1

import ray  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from timing import pct, timed  # noqa: E402
from tumbler.cluster import ClusterClient, NodeHost, host_id_for  # noqa: E402
from tumbler.local import LocalSandbox  # noqa: E402
from tumbler.runtime.spec import Limits, SandboxSpec  # noqa: E402

log = logging.getLogger("bench_cluster")
IMAGE = "debian"
MEMORY = "128m"


def local_window(sandboxes: list[LocalSandbox], seconds: float) -> int:
    """Commands done in `seconds` by a thread per sandbox, each `sb.run` in a loop."""
    counts = [0] * len(sandboxes)
    stop = threading.Event()

    def loop(i: int, sb: LocalSandbox) -> None:
        while not stop.is_set():
            assert sb.run(f"echo {i}").exit_code == 0
            counts[i] += 1
    threads = [threading.Thread(target=loop, args=(i, sb)) for i, sb in enumerate(sandboxes)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts)


def cluster_window(client: ClusterClient, ids: list[str], callers: int, seconds: float) -> int:
    """Commands done in `seconds` by `callers` threads, each `client.run` over its share of
    the sandboxes in a loop (one batch in flight per caller)."""
    counts = [0] * callers
    deadline = time.perf_counter() + seconds

    def loop(c: int) -> None:
        share = ids[c::callers]
        while time.perf_counter() < deadline:
            results = client.run([(sid, f"echo {i}") for i, sid in enumerate(share)], timeout=30)
            assert all(getattr(r, "exit_code", None) == 0 for r in results), results
            counts[c] += len(share)
    threads = [threading.Thread(target=loop, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


class HostHere:
    """A NodeHost in this process, on an event loop of its own thread (no Ray in between)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.host = self.call(_make_host())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=600)

    def close(self) -> None:
        self.call(self.host.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _make_host() -> NodeHost:
    return NodeHost(host_id_for(socket.gethostname(), f"bench-{os.getpid()}"))


def here_window(here: HostHere, ids: list[str], seconds: float) -> int:
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        results = here.call(here.host.run([(sid, f"echo {i}") for i, sid in enumerate(ids)], timeout=30))
        assert all(getattr(r, "exit_code", None) == 0 for r in results), results
        done += len(ids)
    return done


def measure(client: ClusterClient, here: HostHere, size: int, seconds: float,
            window_s: float = 1.0) -> dict:
    """Local and cluster runs in turns of `window_s`, `seconds` each in all, so that load from
    elsewhere on the machine falls on both alike."""
    spec = SandboxSpec(image=IMAGE, limits=Limits(memory=MEMORY))
    ids = client.create(size, spec)
    assert all(isinstance(i, str) for i in ids), ids
    local = [LocalSandbox(image=IMAGE, memory=MEMORY) for _ in range(size)]
    here_ids = here.call(here.host.create([spec] * size))
    modes = {"local": lambda w: local_window(local, w),
             "NodeHost here, no Ray": lambda w: here_window(here, here_ids, w),
             "cluster, 1 caller": lambda w: cluster_window(client, ids, 1, w),
             "cluster, 4 callers": lambda w: cluster_window(client, ids, 4, w)}
    done = dict.fromkeys(modes, 0)
    took = dict.fromkeys(modes, 0.0)
    try:
        for sb in local:
            sb.run("true")
        for _ in range(max(1, round(seconds / window_s))):
            for mode, window in modes.items():
                started = time.perf_counter()
                done[mode] += window(window_s)
                took[mode] += time.perf_counter() - started
    finally:
        for sb in local:
            sb.remove()
        here.call(here.host.remove(here_ids))
        client.remove(ids)
    rates = {mode: done[mode] / took[mode] for mode in modes}
    return {"sandboxes": size, "commands_per_s": rates,
            "ratio_to_local": {m: r / rates["local"] for m, r in rates.items() if m != "local"}}


def round_trips(client: ClusterClient, n: int) -> dict:
    [sid] = client.create(1, SandboxSpec(image=IMAGE, limits=Limits(memory=MEMORY)))
    with LocalSandbox(image=IMAGE, memory=MEMORY) as sb:
        sb.run("true")
        local = timed(lambda: sb.run("echo hi"), n)
        cluster = timed(lambda: client.run([(sid, "echo hi")], timeout=30), n)
    client.remove([sid])
    return {"n": n, "local_p50_ms": pct(local, 0.5) * 1e3, "cluster_p50_ms": pct(cluster, 0.5) * 1e3,
            "local_p99_ms": pct(local, 0.99) * 1e3, "cluster_p99_ms": pct(cluster, 0.99) * 1e3}


def reap_children(timeout_s: float = 10.0) -> None:
    """Ray's processes that outlive its shutdown were reparented to us (a subreaper): wait for
    them and collect them, so nothing is left to pid 1."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)
    log.warning("Ray processes still running %s s after shutdown", timeout_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each rate measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--round-trips", type=int, default=500)
    ap.add_argument("--json", type=Path, default=Path("bench/results/cluster.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER: see reap_children
    ray_dir = tempfile.mkdtemp(prefix="ray-bench-")    # its session: logs, sockets
    ray.init(address="local", num_cpus=2, resources={"tumbler_host": 1}, include_dashboard=False,
             log_to_driver=False, _temp_dir=ray_dir)
    client = ClusterClient()
    here = HostHere()
    try:
        client.start_hosts()
        rates = [measure(client, here, size, args.seconds) for size in args.sizes]
        trips = round_trips(client, args.round_trips)
    finally:
        here.close()
        client.close()
        ray.shutdown()
        reap_children()
        shutil.rmtree(ray_dir, ignore_errors=True)
    modes = list(rates[0]["commands_per_s"])
    table = Table("sandboxes", *modes, "each / local")
    for r in rates:
        cps, ratio = r["commands_per_s"], r["ratio_to_local"]
        table.add_row(str(r["sandboxes"]), *(f"{cps[m]:,.0f}/s" for m in modes),
                      " / ".join(f"{ratio[m]:.2f}x" for m in ratio))
    table.add_row("1, round trip p50", f"{trips['local_p50_ms']:.2f} ms", "",
                  f"{trips['cluster_p50_ms']:.2f} ms", "", "")
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.time(), "host": platform.node(),
                                     "seconds": args.seconds, "rates": rates,
                                     "round_trip": trips}, indent=1))
    log.info("wrote %s", args.json)


if __name__ == "__main__":
    main()
