"""Through a server: pause/resume and fork over HTTP, ROCK's archive and restore, and the
official e2b SDK's calls beside Tumbler's own SDK, in one run.

    .venv/bin/python bench/bench_e2b.py [--n 20] [--json bench/results/e2b.json]

The server is bench_server.py's (`tumbler serve` in a subprocess on 127.0.0.1, auth on, a warm
pool of 8). Figures, p50 in milliseconds unless said: Tumbler SDK `pause()`, `resume()`,
`SandboxGroup.fork(sb, n)` to n running sandboxes; ROCK `archive` of a stopped sandbox holding
`--files` MiB and its `restart` (restore) to running; e2b SDK `Sandbox.create`,
`commands.run("true")`, `files.write` + `files.read` of 1 KiB, `pause()` and
`Sandbox.connect` (resume), each beside the Tumbler SDK's nearest call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from bench_server import IMAGE, TOKEN, start_server
from timing import pct, timed
from tumbler import Sandbox, SandboxGroup
from tumbler.sdk import Client

ROCK = "/apis/envs/sandbox/v1"


def tumbler_side(client: Client, n: int, forks: list[int]) -> dict:
    out = {}
    with Sandbox(IMAGE, client=client) as sb:
        out["tumbler run(true)"] = timed(lambda: sb.run("true"), n)
        out["tumbler write+read 1 KiB"] = timed(
            lambda: (sb.write_file("/root/k", b"x" * 1024), sb.read_bytes("/root/k")), n)
        pauses, resumes = [], []
        for _ in range(n):
            pauses += timed(sb.pause, 1)
            resumes += timed(sb.resume, 1)
        out["tumbler pause()"], out["tumbler resume()"] = pauses, resumes
        sb.run("mkdir -p /srv && seq 1 100000 > /srv/lines")
        for count in forks:
            t = time.perf_counter()
            with SandboxGroup.fork(sb, count) as group:
                out[f"tumbler SandboxGroup.fork(sb, {count})"] = [time.perf_counter() - t]
                assert all(m.run("wc -l < /srv/lines").output == "100000\n" for m in group)
    return out


def rock_side(url: str, files_mib: int, n: int) -> dict:
    http = httpx.Client(base_url=url + ROCK, headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=300)
    sid = http.post("/start_async", json={"image": IMAGE}).json()["result"]["sandbox_id"]
    archive, restore = [], []
    try:
        for i in range(n):
            # New data each time: what an earlier archive holds is below the restored sandbox
            http.post("/execute", json={"sandbox_id": sid, "command":
                                        f"head -c {files_mib << 20} /dev/urandom > /root/blob{i}"})
            http.post("/stop", json={"sandbox_id": sid})
            t = time.perf_counter()
            assert http.post(f"/sandboxes/{sid}/archive").json()["status"] == "Success"
            archive.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert http.post("/restart", json={"sandbox_id": sid}).json()["status"] == "Success"
            restore.append(time.perf_counter() - t)
    finally:
        http.post("/delete", json={"sandbox_id": sid})
        http.close()
    return {f"ROCK archive ({files_mib} MiB written)": archive,
            f"ROCK restart of it (restore)": restore}


def e2b_side(url: str, n: int) -> dict:
    os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=TOKEN)
    from e2b import Sandbox as E2BSandbox
    out = {"e2b Sandbox.create": []}
    made = []
    for _ in range(max(3, n // 4)):
        t = time.perf_counter()
        made.append(E2BSandbox.create(timeout=600))
        out["e2b Sandbox.create"].append(time.perf_counter() - t)
    sb = made[0]
    try:
        out["e2b commands.run(true)"] = timed(lambda: sb.commands.run("true"), n)
        out["e2b files.write+read 1 KiB"] = timed(
            lambda: (sb.files.write("/root/k", b"x" * 1024), sb.files.read("/root/k")), n)
        pauses, resumes = [], []
        for _ in range(n):
            pauses += timed(sb.pause, 1)
            resumes += timed(lambda: E2BSandbox.connect(sb.sandbox_id), 1)
        out["e2b pause()"], out["e2b Sandbox.connect (resume)"] = pauses, resumes
    finally:
        for s in made:
            s.kill()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--forks", default="1,8,64")
    ap.add_argument("--files", type=int, default=32, help="MiB the archived sandbox holds")
    ap.add_argument("--json", type=Path, default=Path("bench/results/e2b.json"))
    args = ap.parse_args()
    state = tempfile.mkdtemp(prefix="bench-e2b-")
    proc, url = start_server(state)
    try:
        with Client(url, TOKEN) as client:
            samples = tumbler_side(client, args.n, [int(c) for c in args.forks.split(",")])
        samples.update(rock_side(url, args.files, max(3, args.n // 4)))
        samples.update(e2b_side(url, args.n))
    finally:
        proc.terminate()
        proc.wait(60)
    table = Table(title=f"through the server (n={args.n})")
    for col in ("what", "p50 ms", "p99 ms", "samples"):
        table.add_column(col)
    results = {"machine": platform.node()}
    for what, xs in samples.items():
        p50, p99 = pct(xs, 0.5) * 1e3, pct(xs, 0.99) * 1e3
        results[what] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "n": len(xs)}
        table.add_row(what, f"{p50:.1f}", f"{p99:.1f}", str(len(xs)))
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
