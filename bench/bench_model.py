"""Benchmark of the model service: latency a call through the bridge adds, and calls/s at scale.

    .venv/bin/python bench/bench_model.py [--calls 2000] [--sandboxes 64] [--calls-each 200]
                                          [--json bench/results/model.json]

A client program in the sandbox (stdlib http.client, one keep-alive connection, the request an
agent would send) times each call. Baseline: the same client against a plain stdlib HTTP server
it starts itself in the same sandbox, answering at once (same HTTP stack, no bridge). Through the
bridge: agent program -> endpoint -> long-poll -> owner (answers at once) -> respond -> program.
Added latency = bridge - baseline, per percentile. Then `--sandboxes` clients at once, one per
sandbox, all starting together: aggregate calls/s. Target (2 cores): p50 added <= 3 ms.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tumbler.local import LocalSandbox
from tumbler.modelservice import AsyncModelBridge, EpisodeEnded, ModelBridge, ModelCall

log = logging.getLogger("bench_model")

# argv: mode (bridge | direct), calls, start_at (CLOCK_MONOTONIC seconds, shared with the host),
# detail (1: print every latency). Prints one JSON line; latencies in microseconds.
CLIENT = r"""
import http.client, json, os, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
mode, calls, start_at, detail = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
ANSWER = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "policy",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "\\boxed{50}"},
                 "finish_reason": "stop"}]}).encode()

class Direct(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

if mode == "direct":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Direct)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port, path = "127.0.0.1", server.server_address[1], "/v1"
else:
    url = urllib.parse.urlsplit(os.environ["OPENAI_BASE_URL"])
    host, port, path = url.hostname, url.port, url.path
body = json.dumps({"model": "policy", "messages": [
    {"role": "system", "content": "You play a guessing game."},
    {"role": "user", "content": "Guess the number between 1 and 100."}]}).encode()
conn = http.client.HTTPConnection(host, port, timeout=60)
def call():
    conn.request("POST", path + "/chat/completions", body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
for _ in range(20):
    call()
time.sleep(max(0.0, start_at - time.monotonic()))
lat, t0 = [], time.monotonic()
for _ in range(calls):
    t = time.perf_counter()
    call()
    lat.append(int((time.perf_counter() - t) * 1e6))
t1 = time.monotonic()
lat.sort()
out = {"t0": t0, "t1": t1, "calls": calls, "p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)]}
if detail:
    out["lat_us"] = lat
print(json.dumps(out))
"""


def percentile(sorted_us: list[int], q: float) -> float:
    """The q-quantile of sorted microseconds, in milliseconds."""
    return sorted_us[min(len(sorted_us) - 1, int(len(sorted_us) * q))] / 1000


async def answer_all(bridge: AsyncModelBridge, episodes: int) -> list[EpisodeEnded]:
    """Answer every call at once (a task each, so answers never queue behind one another)."""
    ended, tasks = [], set()
    while len(ended) < episodes:
        event = await bridge.next_event(120)
        if isinstance(event, ModelCall):
            task = asyncio.create_task(event.respond("\\boxed{50}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif isinstance(event, EpisodeEnded):
            if event.exit_code != 0:
                raise RuntimeError(f"client failed: {event.output}")
            ended.append(event)
    return ended


async def bridged(boxes: list[LocalSandbox], calls: int, detail: bool) -> list[dict]:
    """Run the client in every sandbox through one async bridge; their JSON results."""
    async with AsyncModelBridge() as bridge:
        for sb in boxes:
            await bridge.attach(sb)
        start_at = time.monotonic() + 1.0 + 0.03 * len(boxes)   # after every client's start
        for sb in boxes:
            await bridge.start_episode(sb.id, ["python3", "-c", CLIENT, "bridge", str(calls),
                                               str(start_at), "1" if detail else "0"])
        ended = await answer_all(bridge, len(boxes))
    return [json.loads(e.output.strip().splitlines()[-1]) for e in ended]


def sync_bridged(sb: LocalSandbox, calls: int) -> dict:
    """The client through the blocking ModelBridge (owner in this thread)."""
    with ModelBridge() as bridge:
        bridge.attach(sb)
        bridge.start_episode(sb.id, ["python3", "-c", CLIENT, "bridge", str(calls),
                                     str(time.monotonic() + 0.5), "1"])
        while not isinstance(event := bridge.next_event(timeout_s=120), EpisodeEnded):
            event.respond("\\boxed{50}")
    return json.loads(event.output.strip().splitlines()[-1])


def direct(sb: LocalSandbox, calls: int) -> dict:
    result = sb.exec(["python3", "-c", CLIENT, "direct", str(calls), "0", "1"], timeout=300)
    if result.exit_code != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def latency_row(name: str, result: dict, base: dict | None) -> dict:
    lat = result["lat_us"]
    row = {"path": name, "calls": len(lat), "p50_ms": percentile(lat, 0.5),
           "p99_ms": percentile(lat, 0.99), "mean_ms": statistics.fmean(lat) / 1000}
    if base is not None:
        row["added_p50_ms"] = row["p50_ms"] - percentile(base["lat_us"], 0.5)
        row["added_p99_ms"] = row["p99_ms"] - percentile(base["lat_us"], 0.99)
    return row


def make_sandboxes(n: int) -> list[LocalSandbox]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: LocalSandbox(memory="256m"), range(n)))


def report(rows: list[dict], scale: dict) -> None:
    table = Table(title="model service: one call, agent program -> endpoint -> owner -> back")
    for col in ("path", "calls", "p50 ms", "p99 ms", "added p50 ms", "added p99 ms"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in rows:
        table.add_row(r["path"], str(r["calls"]), f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
                      f"{r['added_p50_ms']:.3f}" if "added_p50_ms" in r else "-",
                      f"{r['added_p99_ms']:.3f}" if "added_p99_ms" in r else "-")
    console = Console()
    console.print(table)
    console.print(f"{scale['sandboxes']} sandboxes at once, {scale['calls_each']} calls each: "
                  f"[bold]{scale['calls_per_s']:.0f} calls/s[/bold] "
                  f"(per-call p50 {scale['p50_ms']:.2f} ms, p99 {scale['p99_ms']:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls in the latency runs")
    parser.add_argument("--sandboxes", type=int, default=64)
    parser.add_argument("--calls-each", type=int, default=200, help="calls per sandbox at scale")
    parser.add_argument("--json", type=Path, default=Path("bench/results/model.json"))
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    boxes = make_sandboxes(opts.sandboxes)
    try:
        base = direct(boxes[0], opts.calls)
        [through] = asyncio.run(bridged(boxes[:1], opts.calls, True))
        through_sync = sync_bridged(boxes[1 % len(boxes)], opts.calls)
        rows = [latency_row("direct HTTP in the sandbox (baseline)", base, None),
                latency_row("AsyncModelBridge", through, base),
                latency_row("ModelBridge (sync)", through_sync, base)]
        results = asyncio.run(bridged(boxes, opts.calls_each, False))
    finally:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(LocalSandbox.remove, boxes))
    span = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    total = sum(r["calls"] for r in results)
    scale = {"sandboxes": len(results), "calls_each": opts.calls_each, "calls": total,
             "seconds": span, "calls_per_s": total / span,
             "p50_ms": statistics.median(r["p50_us"] for r in results) / 1000,
             "p99_ms": max(r["p99_us"] for r in results) / 1000}
    report(rows, scale)
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps({
        "machine": {"cpus": _cpus(), "python": platform.python_version(), "kernel": platform.release()},
        "command": "bench/bench_model.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(opts).items() if k != "json"),
        "latency": rows, "scale": scale, "target": {"added_p50_ms": 3.0}}, indent=2) + "\n")


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
