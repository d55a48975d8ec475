"""Benchmark of agent programs and controlled egress.

    .venv/bin/python bench/bench_agents.py [--agents bash,mini-swe-agent,qwen-code,claude-code]
        [--trials 3] [--mib 64] [--requests 200] [--json bench/results/agents.json]

Agents: each program solves devops/wrong-permission with a scripted owner (the table of
tests/agents/test_programs_e2e.py), `--trials` times; its image is built first if it is not
cached (that time is reported apart). A trial is the sandbox, the program's whole run (its own
start-up, its model calls through the bridge, its commands), the verifier.

Egress: inside one sandbox, a download of `--mib` MiB from a server on 127.0.0.2 through the
proxy (network "egress"), beside the same download from a network="host" sandbox straight to
the server; then `--requests` small requests, each on a new connection (a CONNECT each), and
sandbox start to first command with and without the proxy. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import http.server
import json
import platform
import socketserver
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agents"))

from tumbler.agents import ProgramAgent, ScriptedOwner, load_program  # noqa: E402
from tumbler.local import LocalSandbox, default_runtime  # noqa: E402
from tumbler.tasks.loader import load_tasks  # noqa: E402
from tumbler.tasks.runner import run_tasks  # noqa: E402
from tumbler.tasks.trial import task_image  # noqa: E402

HOST = "127.0.0.2"
DOWNLOAD = r'''
import socket, sys, time, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
t = time.monotonic()
with urllib.request.urlopen(url + "/blob", timeout=120) as r:
    size = 0
    while chunk := r.read(1 << 20): size += len(chunk)
big = time.monotonic() - t
t = time.monotonic()
for _ in range(n):
    urllib.request.urlopen(url + "/small", timeout=30).read()
print(size, big, time.monotonic() - t)
'''


def serve(mib: int):
    blob = b"x" * (1 << 20)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            big = self.path == "/blob"
            self.send_response(200)
            self.send_header("Content-Length", str(mib << 20 if big else 2))
            self.end_headers()
            if big:
                for _ in range(mib):
                    self.wfile.write(blob)
            else:
                self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
    srv = Server((HOST, 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def bench_egress(mib: int, requests: int) -> dict:
    srv = serve(mib)
    port = srv.server_address[1]
    url = f"http://{HOST}:{port}"
    out = {}
    for mode, kwargs in (("host network, direct", {"network": "host"}),
                         ("egress, through the proxy", {"network": "egress",
                                                         "egress": [f"{HOST}:{port}"]})):
        starts = []
        for _ in range(5):
            t = time.monotonic()
            with LocalSandbox(**kwargs) as sb:
                sb.exec(["true"])
                starts.append(time.monotonic() - t)
        with LocalSandbox(**kwargs) as sb:
            env = {"NO_PROXY": "*"} if mode.startswith("host") else {}
            r = sb.exec(["python3", "-c", DOWNLOAD, url, str(requests)], env=env, timeout=600)
            size, big, small = r.stdout.split()
        out[mode] = {"mib_per_s": round(int(size) / (1 << 20) / float(big), 1),
                     "requests_per_s": round(requests / float(small), 1),
                     "start_to_first_command_ms_median": round(statistics.median(starts) * 1000, 1)}
    srv.shutdown()
    return out


def bench_agent(name: str, trials: int) -> dict:
    from test_programs_e2e import TABLE
    runtime = default_runtime()
    [task] = load_tasks("devops", ["wrong-permission"])
    agent = ProgramAgent(load_program(name), ScriptedOwner(TABLE, fallback="OK"))
    t = time.monotonic()
    image = task_image(task, runtime)
    agent.prepare_image(*image, runtime)
    build_s = time.monotonic() - t
    with tempfile.TemporaryDirectory() as out:
        results = run_tasks([task], agent, k=trials, out_dir=Path(out), runtime=runtime)
    return {"build_or_cache_s": round(build_s, 1),
            "passed": sum(r.passed for r in results), "trials": len(results),
            "agent_s_median": round(statistics.median(r.agent_seconds for r in results), 2),
            "trial_s_median": round(statistics.median(r.seconds for r in results), 2)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--agents", default="bash,mini-swe-agent,qwen-code,claude-code")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--mib", type=int, default=64)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--json", default="bench/results/agents.json")
    args = p.parse_args()
    console = Console()
    egress = bench_egress(args.mib, args.requests)
    table = Table("path", "MiB/s", "new-connection requests/s", "sandbox start ms (median of 5)",
                  title="controlled egress")
    for mode, row in egress.items():
        table.add_row(mode, str(row["mib_per_s"]), str(row["requests_per_s"]),
                      str(row["start_to_first_command_ms_median"]))
    console.print(table)
    agents = {}
    for name in [a for a in args.agents.split(",") if a]:
        try:
            agents[name] = bench_agent(name, args.trials)
        except Exception as exc:   # one program that cannot build must not hide the others
            agents[name] = {"error": str(exc)[-300:]}
    table = Table("agent", "image build (or cache) s", "passed", "agent s p50", "trial s p50",
                  title="agent programs on devops/wrong-permission, scripted owner")
    for name, row in agents.items():
        if "error" in row:
            table.add_row(name, "error", row["error"][:60], "", "")
        else:
            table.add_row(name, str(row["build_or_cache_s"]), f"{row['passed']}/{row['trials']}",
                          str(row["agent_s_median"]), str(row["trial_s_median"]))
    console.print(table)
    Path(args.json).write_text(json.dumps({"machine": platform.node(), "egress": egress,
                                           "agents": agents, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
