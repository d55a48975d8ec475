"""Peer figures: ROCK's in-sandbox server (`rocklet`) and SWE-ReX's (`swerex-remote`) on loopback.

Both servers run as subprocesses out of the peers' own venv (default /opt/peers-venv, made by
`scripts/peers-venv.sh`; override with PEERS_VENV), bound to 127.0.0.1 on free ports, with no
isolation and no control plane. This module only speaks HTTP to them (httpx from Tumbler's venv),
through their own APIs (both serve the same SWE-ReX-style routes):

    POST /create_session {"session": NAME, "session_type": "bash"}
    POST /run_in_session {"session": NAME, "command": "echo hi", "action_type": "bash", "check": "raise"}
    POST /close_session  {"session": NAME, "session_type": "bash"}

rocklet also wants "sandbox_id" in each body; swerex-remote wants an `X-API-Key` header.

Figures, with the names that Tumbler's bench uses:
    session_create_ms  {"n", "p50", "p99"}  opening a bash session (each closed again afterwards)
    rtt_ms             {"n", "p50", "p99"}  `echo hi` round trip in one open session
    parallel8_cmds_per_s                     `echo hi` completed per second over 8 sessions, each
                                             driven by its own thread and connection, for ~5 s
    parallel8_errors                         error replies during that run (the session is then
                                             closed and opened again; not counted as completed)

    .venv/bin/python bench/peers.py [--rtt 200] [--create 30] [--seconds 5] [--json bench/results/peers.json]

Every server process and every shell it spawned is stopped before this returns (the shells are
pexpect children in their own sessions, so they are found by walking /proc, not by process group).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = "/opt/peers-venv"
PEERS = ("rocklet", "swerex")


class PeerUnavailable(RuntimeError):
    """The peers' venv or one of its commands is missing."""


def peers_venv() -> Path:
    venv = Path(os.environ.get("PEERS_VENV", DEFAULT_VENV))
    for cmd in ("rocklet", "swerex-remote"):
        if not (venv / "bin" / cmd).exists():
            raise PeerUnavailable(f"{venv}/bin/{cmd} is missing: run `bash scripts/peers-venv.sh` first")
    return venv


def peer_versions(venv: Path | None = None) -> dict[str, str]:
    venv = venv or peers_venv()
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from importlib.metadata import version as v; print(v('rl-rock'), v('swe-rex'))"],
        capture_output=True, text=True, check=True).stdout.split()
    return {"rocklet": f"rl-rock {out[0]}", "swerex": f"swe-rex {out[1]}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """ppid -> pids, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces or parentheses: split after its last ')'
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] != b"Z"


def stop_tree(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the server and everything under it (its own group and the shells it setsid'ed),
    then SIGKILL what is left after `grace` seconds; reap the server."""
    if proc.poll() is not None:
        return
    pids = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *pids]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            proc.poll()
            pids = [p for p in pids if _alive(p)]
            if proc.returncode is not None and not pids:
                return
            time.sleep(0.05)
    proc.wait(timeout=5)


class Peer:
    """One peer server on loopback, spoken to over HTTP."""

    def __init__(self, name: str, venv: Path, workdir: Path):
        self.name, self.port = name, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = {}
        self.extra: dict[str, str] = {}
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        if name == "rocklet":
            cmd = [str(venv / "bin" / "rocklet"), "--host", "127.0.0.1", "--port", str(self.port)]
            env["ROCK_LOGGING_PATH"] = str(workdir)  # its access/command logs, not ~/ or /data/logs
            self.extra = {"sandbox_id": "bench"}  # rocklet's request models require a non-blank one
        elif name == "swerex":
            token = uuid.uuid4().hex
            cmd = [str(venv / "bin" / "swerex-remote"), "--host", "127.0.0.1", "--port", str(self.port),
                   "--auth-token", token]
            self.headers = {"X-API-Key": token}
        else:
            raise ValueError(name)
        self.log = open(workdir / f"{name}.log", "wb")
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = httpx.Client(base_url=self.base, headers=self.headers, timeout=60)

    def wait_ready(self, timeout: float = 60) -> float:
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.client.get("/is_alive", timeout=2).json().get("is_alive"):
                    return time.monotonic() - started
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} not ready within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, n: int = 2000) -> str:
        self.log.flush()
        return Path(self.log.name).read_bytes()[-n:].decode(errors="replace")

    def call(self, route: str, body: dict, client: httpx.Client | None = None) -> dict:
        r = (client or self.client).post(route, json={**body, **self.extra})
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} {route}: HTTP {r.status_code} {r.text[:300]}")
        return r.json()

    def create(self, session: str, client: httpx.Client | None = None) -> None:
        self.call("/create_session", {"session": session, "session_type": "bash"}, client)

    def run(self, session: str, command: str, client: httpx.Client | None = None) -> dict:
        return self.call("/run_in_session", {"session": session, "command": command,
                                             "action_type": "bash", "check": "raise"}, client)

    def close_session(self, session: str, client: httpx.Client | None = None) -> None:
        self.call("/close_session", {"session": session, "session_type": "bash"}, client)

    def stop(self) -> None:
        try:
            self.client.post("/close", timeout=5)  # closes every shell the server still has
        except httpx.HTTPError:
            pass
        self.client.close()
        stop_tree(self.proc)
        self.log.close()


@contextmanager
def running(name: str, venv: Path | None = None) -> Iterator[Peer]:
    venv = venv or peers_venv()
    workdir = Path(tempfile.mkdtemp(prefix=f"peer-{name}-"))
    peer = Peer(name, venv, workdir)
    try:
        peer.ready_s = peer.wait_ready()
        yield peer
    finally:
        peer.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _pct(samples: list[float]) -> dict:
    xs = sorted(samples)
    pick = lambda q: round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3, 3)  # noqa: E731
    return {"n": len(xs), "p50": pick(0.5), "p99": pick(0.99)}


def measure_one(peer: Peer, n_rtt: int = 200, n_create: int = 30, seconds: float = 5.0,
                sessions: int = 8) -> dict:
    # session creation: each one opened, timed, and closed again (untimed)
    peer.create("warm")
    peer.close_session("warm")
    creates = []
    for i in range(n_create):
        t = time.perf_counter()
        peer.create(f"c{i}")
        creates.append(time.perf_counter() - t)
        peer.close_session(f"c{i}")

    # round trip of `echo hi` in one session
    peer.create("rtt")
    out = peer.run("rtt", "echo hi")
    if out.get("output", "").strip() != "hi" or out.get("exit_code") != 0:
        raise RuntimeError(f"{peer.name}: unexpected reply to `echo hi`: {out}")
    for _ in range(min(10, n_rtt)):
        peer.run("rtt", "echo hi")
    rtts = []
    for _ in range(n_rtt):
        t = time.perf_counter()
        peer.run("rtt", "echo hi")
        rtts.append(time.perf_counter() - t)
    peer.close_session("rtt")

    # aggregate throughput: `sessions` sessions, one thread and one connection each
    clients = [httpx.Client(base_url=peer.base, headers=peer.headers, timeout=60) for _ in range(sessions)]
    counts, errors = [0] * sessions, []
    try:
        for i, c in enumerate(clients):
            peer.create(f"p{i}", c)
        start = threading.Barrier(sessions + 1)
        stop_at = [0.0]

        def worker(i: int) -> None:
            start.wait()
            while time.perf_counter() < stop_at[0]:
                try:
                    peer.run(f"p{i}", "echo hi", clients[i])
                    counts[i] += 1
                except (RuntimeError, httpx.HTTPError) as e:  # an error reply or a dropped connection:
                    errors.append(f"{type(e).__name__}: {e}")  # count it, and start the session
                    # afresh (its shell may be out of step now)
                    try:
                        peer.close_session(f"p{i}", clients[i])
                    except (RuntimeError, httpx.HTTPError):
                        pass
                    peer.create(f"p{i}", clients[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
        for th in threads:
            th.start()
        stop_at[0] = time.perf_counter() + seconds
        t0 = time.perf_counter()
        start.wait()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
        for i, c in enumerate(clients):
            peer.close_session(f"p{i}", c)
    finally:
        for c in clients:
            c.close()
    figures = {"session_create_ms": _pct(creates), "rtt_ms": _pct(rtts),
               "parallel8_cmds_per_s": round(sum(counts) / elapsed, 1), "parallel8_errors": len(errors)}
    if errors:
        figures["parallel8_first_error"] = errors[0][:300]
    return figures


def measure_peers(n_rtt: int = 200, n_create: int = 30, seconds: float = 5.0) -> dict:
    """{"rocklet": {...}, "swerex": {...}}, each with session_create_ms {n,p50,p99}, rtt_ms
    {n,p50,p99}, parallel8_cmds_per_s, version and ready_s (spawn to first /is_alive).
    Raises PeerUnavailable when the peers' venv is not set up."""
    venv = peers_venv()
    versions = peer_versions(venv)
    results = {}
    for name in PEERS:
        with running(name, venv) as peer:
            ready = peer.ready_s
            figures = measure_one(peer, n_rtt=n_rtt, n_create=n_create, seconds=seconds)
        results[name] = {**figures, "version": versions[name], "ready_s": round(ready, 3)}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt", type=int, default=200, help="`echo hi` round trips")
    ap.add_argument("--create", type=int, default=30, help="sessions created")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the 8-session run")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "peers.json"))
    args = ap.parse_args()
    res = measure_peers(n_rtt=args.rtt, n_create=args.create, seconds=args.seconds)
    print(f"{'peer':9} {'version':16} {'create p50':>11} {'create p99':>11} {'rtt p50':>9} "
          f"{'rtt p99':>9} {'8-par cmd/s':>12} {'errors':>6}")
    for name, f in res.items():
        print(f"{name:9} {f['version']:16} {f['session_create_ms']['p50']:>9.1f}ms "
              f"{f['session_create_ms']['p99']:>9.1f}ms {f['rtt_ms']['p50']:>7.1f}ms "
              f"{f['rtt_ms']['p99']:>7.1f}ms {f['parallel8_cmds_per_s']:>12.1f} {f['parallel8_errors']:>6}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
