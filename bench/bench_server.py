"""End-to-end figures through the server and the SDK: SDK -> HTTP -> server -> agent -> bash.

    .venv/bin/python bench/bench_server.py [--quick]

Starts `tumbler serve` (uvicorn, auth on, a warm pool of 8) in a subprocess on 127.0.0.1 with a
free port and its own registry, prints a table and writes bench/results/server.json. Then, in the
same run, the same session workload against ROCK's and SWE-ReX's in-sandbox servers (bench/peers.py;
needs /opt/peers-venv from scripts/peers-venv.sh, else skipped) and the ratios. Needs root and the
"debian" image.
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

from tumbler.sdk import AsyncClient, AsyncSandbox, Client, Sandbox
from timing import echo_window, pct, timed

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")
TOKEN = "bench-token"
RESULTS = Path(__file__).parent / "results" / "server.json"
POOL, POOL_SIZE = "bench", 8
COLD = {"hostname": "cold"}  # any spec the pool does not hold: a cold create


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state_dir: str, batch_scheduling: bool = True) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = {"port": port, "state_dir": state_dir, "tokens": [TOKEN], "log_level": "warning",
              "node_memory_bytes": 64 << 30, "pools": [{"name": POOL, "size": POOL_SIZE}],
              "batch_scheduling": batch_scheduling}
    code = ("import sys; from tumbler.cli.serve import run; from tumbler.server.config import "
            "ServerConfig; run(ServerConfig.model_validate_json(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(config)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start")


def bench_sync(client: Client, n: int) -> dict:
    res = {}
    with Sandbox(IMAGE, client=client) as sb:
        s = sb.session("bench")
        timed(lambda: s.run("echo hi"), 50)                       # warm up
        rt = timed(lambda: s.run("echo hi"), n)
        res["session_rtt_p50_ms"] = pct(rt, 0.5) * 1e3
        res["session_rtt_p99_ms"] = pct(rt, 0.99) * 1e3
        names = iter(range(10 ** 6))

        def make_session():
            sb.session(f"s{next(names)}").close()
        sc = timed(make_session, max(20, n // 20))
        res["session_create_close_p50_ms"] = pct(sc, 0.5) * 1e3
        ex = timed(lambda: sb.exec(["true"]), max(50, n // 10))
        res["exec_p50_ms"] = pct(ex, 0.5) * 1e3

    creates, first = [], []
    for _ in range(max(10, n // 50)):
        t = time.perf_counter()
        sb = Sandbox(IMAGE, client=client, **COLD)
        t_created = time.perf_counter()
        sb.run("echo ready")
        t_first = time.perf_counter()
        sb.remove()
        creates.append(t_created - t)
        first.append(t_first - t)
    res["sandbox_create_p50_ms"] = pct(creates, 0.5) * 1e3
    res["sandbox_create_to_first_result_p50_ms"] = pct(first, 0.5) * 1e3
    return res


def pool_ready(client: Client) -> int:
    return next((p.ready for p in client.pools() if p.name == POOL), 0)


def wait_pool_full(client: Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while pool_ready(client) < POOL_SIZE:
        if time.monotonic() > deadline:
            raise SystemExit(f"the warm pool did not fill within {timeout_s} s: {client.pools()}")
        time.sleep(0.02)


def bench_pool(client: Client, n: int) -> dict:
    """create from the warm pool (a handover), and to the first command's result."""
    takes, first = [], []
    for _ in range(n):
        wait_pool_full(client)  # not timed: each take finds a full pool
        t = time.perf_counter()
        sb = Sandbox(IMAGE, client=client)
        takes.append(time.perf_counter() - t)
        sb.run("echo ready")
        first.append(time.perf_counter() - t)
        sb.remove()
    return {"pool_create_p50_ms": pct(takes, 0.5) * 1e3, "pool_create_p99_ms": pct(takes, 0.99) * 1e3,
            "pool_create_to_first_result_p50_ms": pct(first, 0.5) * 1e3}


def bench_peers(results: dict, quick: bool) -> dict:
    """ROCK's and SWE-ReX's servers, same workload, same run; ratios peer / Tumbler."""
    sys.path.insert(0, str(Path(__file__).parent))
    import peers
    try:
        peers.peers_venv()
    except (SystemExit, Exception) as exc:  # no peers venv: say so, keep our figures
        print(f"peers skipped: {exc}")
        return {}
    try:
        figures = peers.measure_peers(n_rtt=100 if quick else 200, n_create=10 if quick else 30,
                                      seconds=2.0 if quick else 5.0)
    except Exception as exc:  # a peer's server failing mid-run costs its figures, not ours
        print(f"peers failed: {type(exc).__name__}: {str(exc)[:300]}")
        return {}
    ours = {"rtt": results["session_rtt_p50_ms"], "create": results["session_create_close_p50_ms"],
            "parallel8": results["aggregate_8_sessions_cmds_per_s"]}
    out = {}
    for name, f in figures.items():
        out[f"{name}_session_rtt_p50_ms"] = f["rtt_ms"]["p50"]
        out[f"{name}_session_create_p50_ms"] = f["session_create_ms"]["p50"]
        out[f"{name}_parallel8_cmds_per_s"] = f["parallel8_cmds_per_s"]
        out[f"{name}_rtt_ratio_vs_tumbler"] = f["rtt_ms"]["p50"] / ours["rtt"]
        out[f"{name}_session_create_ratio_vs_tumbler"] = f["session_create_ms"]["p50"] / ours["create"]
        out[f"tumbler_parallel8_ratio_vs_{name}"] = ours["parallel8"] / max(f["parallel8_cmds_per_s"], 1e-9)
    return out


async def bench_async(url: str, burst: int) -> dict:
    async with AsyncClient(url, TOKEN) as client:
        return await _burst(client, burst)


async def _pool_refilled(client: AsyncClient, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while next((p.ready for p in await client.pools() if p.name == POOL), POOL_SIZE) < POOL_SIZE:
        if time.monotonic() > deadline:
            raise SystemExit(f"the warm pool did not refill within {timeout_s} s")
        await asyncio.sleep(0.02)


async def _burst(client: AsyncClient, burst: int) -> dict:
    """`burst` cold creates at once, each to its first command's result; then their removal."""
    res = {}
    t = time.perf_counter()
    made = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client, memory="64m", **COLD)
                                  for _ in range(burst)), return_exceptions=True)
    ok = [m for m in made if isinstance(m, AsyncSandbox)]
    await asyncio.gather(*(sb.run("echo ready") for sb in ok))
    res[f"create_{burst}_concurrent_all_ready_s"] = time.perf_counter() - t
    res[f"create_{burst}_concurrent_failed"] = len(made) - len(ok)
    t = time.perf_counter()
    await asyncio.gather(*(sb.remove() for sb in ok), return_exceptions=True)
    res[f"remove_{burst}_concurrent_s"] = time.perf_counter() - t
    return res


class LocalWindows:
    """`sessions` LocalSandboxes, one session each, timed in windows of echo back to back."""

    def __init__(self, sessions: int):
        from tumbler import LocalSandbox
        self.boxes = [LocalSandbox(IMAGE) for _ in range(sessions)]
        self.sess = [sb.session("agg") for sb in self.boxes]

    def window(self, length: float) -> float:
        import threading
        counts = [0] * len(self.sess)
        stop_at = time.perf_counter() + length

        def worker(i):
            while time.perf_counter() < stop_at:
                self.sess[i].run("echo hi")
                counts[i] += 1
        t = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(self.sess))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return sum(counts) / (time.perf_counter() - t)

    def __enter__(self) -> "LocalWindows":
        return self

    def __exit__(self, *exc) -> None:
        for sb in self.boxes:
            sb.remove()


class ServerWindows:
    """`sessions` sandboxes of the server, one session each, timed as LocalWindows, on an event
    loop of their own (so the windows can alternate with LocalWindows')."""

    def __init__(self, url: str, sessions: int):
        self.loop = asyncio.new_event_loop()

        async def setup():
            self.client = AsyncClient(url, TOKEN)
            self.boxes = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=self.client)
                                                for _ in range(sessions)))
            self.sess = await asyncio.gather(*(sb.session("agg") for sb in self.boxes))
            # Those came from the warm pool, which now starts as many anew: wait for it, or
            # the windows would time the pool's cold starts too (the local windows start none).
            await _pool_refilled(self.client)
        self.loop.run_until_complete(setup())

    def window(self, length: float) -> float:
        return self.loop.run_until_complete(echo_window(self.sess, length))

    def __enter__(self) -> "ServerWindows":
        return self

    def __exit__(self, *exc) -> None:
        async def teardown():
            await asyncio.gather(*(sb.remove() for sb in self.boxes))
            await self.client.close()
        self.loop.run_until_complete(teardown())
        self.loop.close()


def compare_aggregates(url: str, pairs: int, seconds: float, server_pid: int | None = None,
                       batched: bool = False) -> dict:
    """The 8-session aggregate through server + SDK against LocalSandbox's, in windows that
    alternate (server, local, server, ...) so both see the same load on the shared machine;
    the ratio is the median of the pairs' (one window hit by a burst of other work moves a
    median less than a mean). `batched`: each pair gets a third window, the server's with
    the client's run stream off (`AsyncClient(run_stream=False)`: commands in batches). With `server_pid`,
    the server's and this client's CPU per command in the server windows too."""
    def timed(window, count_cpu: bool) -> tuple[float, float, float]:
        s0, c0, t = _cpu_s(server_pid), time.process_time(), time.perf_counter()
        rate = window()
        commands = rate * (time.perf_counter() - t)
        return (rate, 1e6 * (_cpu_s(server_pid) - s0) / commands,
                1e6 * (time.process_time() - c0) / commands) if count_cpu else (rate, 0.0, 0.0)
    with ServerWindows(url, 8) as server, LocalWindows(8) as local:
        stream = getattr(server.client, "_stream", None)   # an SDK from before it has none

        def server_window(streamed: bool) -> float:
            if stream is not None:
                server.client._stream = stream if streamed else None   # noqa: SLF001
            return server.window(seconds)
        server.window(0.5)   # warm up both
        local.window(0.5)
        rows = []
        for _ in range(pairs):
            rows.append((timed(lambda: server_window(True), server_pid is not None),
                         local.window(seconds),
                         timed(lambda: server_window(False), server_pid is not None)
                         if batched else None))
        if stream is not None:
            server.client._stream = stream   # noqa: SLF001
    res = {"aggregate_8_sessions_cmds_per_s": _mean(r[0][0] for r in rows),
           "local_aggregate_8_sessions_cmds_per_s": _mean(r[1] for r in rows)}
    res.update(_ratios("server_vs_local_aggregate_ratio", [r[0][0] / r[1] for r in rows]))
    if server_pid is not None:
        res["server_cpu_us_per_command"] = _median([r[0][1] for r in rows])
        res["client_cpu_us_per_command"] = _median([r[0][2] for r in rows])
    if batched:
        res["batched_aggregate_8_sessions_cmds_per_s"] = _mean(r[2][0] for r in rows)
        res.update(_ratios("batched_vs_local_aggregate_ratio", [r[2][0] / r[1] for r in rows]))
        if server_pid is not None:
            res["batched_server_cpu_us_per_command"] = _median([r[2][1] for r in rows])
            res["batched_client_cpu_us_per_command"] = _median([r[2][2] for r in rows])
    return res


def _ratios(name: str, ratios: list[float]) -> dict:
    return {name: _median(ratios), f"{name}_min": min(ratios), f"{name}_max": max(ratios)}


def _median(xs: list[float]) -> float:
    xs, mid = sorted(xs), len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def _cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) process `pid` has used; 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer samples, no 200-sandbox burst")
    ap.add_argument("--n", type=int, default=2000, help="session round trips to time")
    ap.add_argument("--burst", type=int, default=200, help="sandboxes created at once")
    ap.add_argument("--aggregate-only", action="store_true",
                    help="only the 8-session aggregate, server against local (no peers)")
    ap.add_argument("--batched", action="store_true",
                    help="with the aggregate, also the server's with the SDK's run stream off "
                         "(its commands in batches, as before the stream)")
    ap.add_argument("--normal-scheduling", action="store_true",
                    help="the server under the normal CPU policy, not SCHED_BATCH "
                         "(ServerConfig.batch_scheduling false), to compare")
    args = ap.parse_args()
    n, burst, seconds, pairs = (300, 20, 1.0, 5) if args.quick else (args.n, args.burst, 2.0, 7)
    with tempfile.TemporaryDirectory(prefix="tumbler-bench-") as state:
        proc, url = start_server(state, not args.normal_scheduling)
        try:
            results = {}
            if not args.aggregate_only:
                with Client(url, TOKEN) as client:
                    results = bench_sync(client, n)
                    results.update(bench_pool(client, 10 if args.quick else 30))
            # Server and local windows alternate, so both see the same load on the machine.
            results.update(compare_aggregates(url, pairs, seconds, proc.pid, args.batched))
            if burst and not args.aggregate_only:
                results.update(asyncio.run(bench_async(url, burst)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    if not args.aggregate_only:
        results.update(bench_peers(results, args.quick))
    budgets = {"session_rtt_p50_ms": ("<=", 2.0), "session_create_close_p50_ms": ("<=", 20.0),
               "sandbox_create_to_first_result_p50_ms": ("<=", 150.0),
               "aggregate_8_sessions_cmds_per_s": (">=", 2000.0), "pool_create_p50_ms": ("<=", 10.0)}
    print(f"{'measure':48} {'value':>10}  budget")
    for key, value in results.items():
        op, limit = budgets.get(key, ("", None))
        mark = ""
        if limit is not None:
            mark = f"{op} {limit:g}  " + ("ok" if (value <= limit if op == "<=" else value >= limit) else "MISSED")
        print(f"{key:48} {value:>10.2f}  {mark}")
    if args.aggregate_only:
        return   # a partial run: the results file keeps the last full one
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": results, "machine": {
        "cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
        "command": "python bench/bench_server.py" + (" --quick" if args.quick else ""),
        "time": time.time()}, indent=2))


if __name__ == "__main__":
    main()
