"""What an open web console costs the server, and how fast it shows what changed.

    .venv/bin/python bench/bench_console.py [--sandboxes 50] [--viewers 8] [--n 500] [--json bench/results/console.json]

A real `tumbler serve` (token on) with `--sandboxes` sandboxes. Then, in one sitting:
- idle server CPU, in ms per second, with no viewer and with `--viewers` event streams open,
  each watching one sandbox at the console's interval (1 s: the list, pools, node, and the
  sandbox's stats, sessions and processes), read from the server's /proc/PID/stat;
- the session round trip (`echo hi`, sync SDK), p50 and p99 in ms, with and without those
  viewers (a console open beside a training run should not slow it);
- in Debian's chromium: seconds from opening /ui to all sandboxes in the table, and from an
  SDK create to its row in the table (the event stream's latency, bounded by its 1 s interval);
- the terminal's keystroke echo: ms from sending a key to a PTY'd bash (`job.input` through
  POST /v1/sandboxes/{id}/op, as the page does) to reading its echo (`job.events`), p50 / p99.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from timing import pct, timed
from tumbler.sdk import Client

TOKEN = "bench-console"
PORT = 8049
URL = f"http://127.0.0.1:{PORT}"
CHROMIUM = "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")


def serve(state: Path, port: int = PORT, token: str = TOKEN, *options: str) -> subprocess.Popen:
    """`tumbler serve` in a subprocess on loopback, once it answers (scripts/ uses it too)."""
    proc = subprocess.Popen([str(Path(sys.executable).parent / "tumbler"), "serve", "--port", str(port),
                             "--token", token, "--state-dir", str(state), "--log-level", "warning",
                             *options])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the server did not come up in 30 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cpu_ms_per_s(pid: int, seconds: float) -> float:
    start, t = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 1000 * (cpu_seconds(pid) - start) / (time.monotonic() - t)


class Viewers:
    """`count` event streams, each watching one sandbox, read to the end in threads."""

    def __init__(self, sandbox_ids: list[str], count: int):
        self.stop = threading.Event()
        self.events = 0
        self.threads = [threading.Thread(target=self._watch, args=(sandbox_ids[i % len(sandbox_ids)],),
                                         daemon=True) for i in range(count)]

    def _watch(self, sandbox_id: str) -> None:
        with httpx.stream("GET", URL + "/v1/events", params={"sandbox": sandbox_id},
                          headers={"authorization": f"Bearer {TOKEN}"}, timeout=None) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    self.events += 1
                if self.stop.is_set():
                    return

    def __enter__(self):
        for t in self.threads:
            t.start()
        time.sleep(2)       # every stream open and past its first burst
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)


def round_trip_ms(client: Client, sandbox_id: str, n: int) -> tuple[float, float]:
    sb = client.get(sandbox_id)
    samples = timed(lambda: sb.run("echo hi"), n)
    return 1000 * pct(samples, 0.5), 1000 * pct(samples, 0.99)


def echo_ms(client: Client, sandbox_id: str, n: int) -> tuple[float, float]:
    """Keystroke to echo in the console's terminal, as the page drives it."""
    sb = client.get(sandbox_id)
    pid = sb.call("job.start", {"argv": ["/bin/bash", "--norc", "-i"], "pty": {"rows": 24, "cols": 80},
                                "env": {"TERM": "xterm-256color"}})[0]["pid"]
    after = 0

    def read_until(want: bytes) -> None:
        nonlocal after
        seen = b""
        while want not in seen:
            result, body = sb.call("job.events", {"pid": pid, "after": after, "wait": 5}, timeout=30)
            after, seen = result["next"], seen + body

    try:
        read_until(b"# ")                   # the prompt (root's)
        samples = []
        for i in range(n):
            key = b"abcdefghij"[i % 10:i % 10 + 1]
            t = time.perf_counter()
            sb.call("job.input", {"pid": pid}, key)
            read_until(key)
            samples.append(time.perf_counter() - t)
    finally:
        sb.call("job.signal", {"pid": pid, "signal": 9})
    return 1000 * pct(samples, 0.5), 1000 * pct(samples, 0.99)


def page_figures(client: Client, count: int, creates: int = 5) -> dict[str, float]:
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(URL + "/ui/")
        page.fill("#token", TOKEN)
        t = time.perf_counter()
        page.click("#login-form button")
        page.wait_for_selector(f"#sandbox-table tbody tr:nth-child({count})", timeout=60_000)
        first_table = time.perf_counter() - t
        lags = []
        for _ in range(creates):
            t = time.perf_counter()
            sb = client.create("debian", labels={"bench": "console-late"})
            created = time.perf_counter() - t
            page.wait_for_selector(f"tr[data-id='{sb.id}']", timeout=30_000)
            lags.append(time.perf_counter() - t - created)
            sb.remove()
        browser.close()
    return {"table_s": first_table, "row_after_create_p50_s": pct(lags, 0.5),
            "row_after_create_max_s": max(lags)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=50)
    ap.add_argument("--viewers", type=int, default=8)
    ap.add_argument("--n", type=int, default=500, help="commands per round-trip measure")
    ap.add_argument("--idle-s", type=float, default=10.0, help="seconds of each CPU reading")
    ap.add_argument("--json", default="bench/results/console.json")
    args = ap.parse_args()
    out: dict = {"machine": platform.node(), "sandboxes": args.sandboxes, "viewers": args.viewers}
    with tempfile.TemporaryDirectory() as state:
        server = serve(Path(state))
        client = Client(URL, TOKEN)
        made = []
        try:
            made = [client.create("debian", labels={"bench": "console", "i": str(i)}, memory="128m")
                    for i in range(args.sandboxes)]
            ids = [sb.id for sb in made]
            round_trip_ms(client, ids[0], 50)     # warm up
            out["idle_cpu_ms_per_s"] = cpu_ms_per_s(server.pid, args.idle_s)
            out["rt_p50_ms"], out["rt_p99_ms"] = round_trip_ms(client, ids[0], args.n)
            with Viewers(ids, args.viewers) as viewers:
                out["viewers_cpu_ms_per_s"] = cpu_ms_per_s(server.pid, args.idle_s)
                out["rt_viewers_p50_ms"], out["rt_viewers_p99_ms"] = round_trip_ms(client, ids[0], args.n)
                out["events_received"] = viewers.events
            out["cpu_ms_per_s_per_viewer"] = ((out["viewers_cpu_ms_per_s"] - out["idle_cpu_ms_per_s"])
                                              / args.viewers)
            out["echo_p50_ms"], out["echo_p99_ms"] = echo_ms(client, ids[1], 200)
            out.update(page_figures(client, args.sandboxes))
        finally:
            for sb in made:
                sb.remove()
            client.close()
            server.terminate()
            server.wait(60)
    table = Table(title=f"web console, {args.sandboxes} sandboxes, {args.viewers} viewers (machine {out['machine']})")
    table.add_column("measure")
    table.add_column("figure", justify="right")
    rows = [("server CPU at rest, no viewer", f"{out['idle_cpu_ms_per_s']:.1f} ms/s"),
            (f"server CPU at rest, {args.viewers} viewers", f"{out['viewers_cpu_ms_per_s']:.1f} ms/s"),
            ("  per viewer", f"{out['cpu_ms_per_s_per_viewer']:.1f} ms/s"),
            ("session round trip p50 / p99, no viewer", f"{out['rt_p50_ms']:.2f} / {out['rt_p99_ms']:.2f} ms"),
            (f"session round trip p50 / p99, {args.viewers} viewers",
             f"{out['rt_viewers_p50_ms']:.2f} / {out['rt_viewers_p99_ms']:.2f} ms"),
            ("  p50 ratio (viewers / none)", f"{out['rt_viewers_p50_ms'] / out['rt_p50_ms']:.2f}x"),
            (f"open /ui to {args.sandboxes} rows in the table", f"{out['table_s']:.2f} s"),
            ("terminal keystroke to echo, p50 / p99",
             f"{out['echo_p50_ms']:.2f} / {out['echo_p99_ms']:.2f} ms"),
            ("SDK create to its row in the table, p50 / max",
             f"{out['row_after_create_p50_s']:.2f} / {out['row_after_create_max_s']:.2f} s")]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
