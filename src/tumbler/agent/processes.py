"""Process ops: list the sandbox's processes from /proc, and send one a signal."""
from __future__ import annotations

import os
import signal as sig

from . import args as a
from .protocol import INVALID, NOT_FOUND, AgentRequestError

PID_MAX_LIMIT = 1 << 22  # the kernel's largest pid_max


def list_processes(req: dict, body: bytes) -> tuple[dict, bytes]:
    """{"processes": [{pid, ppid, pgid, state, uid, rss_bytes, cmd}, ...]} sorted by pid."""
    page = os.sysconf("SC_PAGE_SIZE")
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_process(int(entry), page)
            if proc is not None:
                procs.append(proc)
    procs.sort(key=lambda p: p["pid"])
    return {"processes": procs}, b""


def session_groups(sid: int) -> set[int]:
    """The process groups of session `sid` (its leader's group included): a terminal's shell
    puts each background job in a group of its own, all in the one session."""
    groups = {sid}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[3]) == sid:  # fields after comm: state ppid pgrp session
            groups.add(int(fields[2]))
    return groups


def send_signal(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Send `signal` (a number or a name: "TERM", "SIGKILL") to `pid`; pid <= 1 and the agent are refused."""
    pid = a.get(req, "pid", int)
    signum = _signal_number(req.get("signal", "TERM"))
    if pid <= 1 or pid == os.getpid():
        raise AgentRequestError(INVALID, f"pid {pid} is the agent (or not a process): refused")
    if pid > PID_MAX_LIMIT:  # os.kill would raise OverflowError past a C int
        raise AgentRequestError(NOT_FOUND, f"no process with pid {pid}")
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        raise AgentRequestError(NOT_FOUND, f"no process with pid {pid}") from None
    except PermissionError:
        raise AgentRequestError(INVALID, f"not permitted to signal pid {pid}") from None
    return {}, b""


def _signal_number(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < sig.NSIG:
            return value
    elif isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if isinstance(getattr(sig.Signals, name, None), sig.Signals):
            return getattr(sig.Signals, name).value
    raise AgentRequestError(INVALID, f"unknown signal {value!r}: give a number or a name like 'TERM'")


def _read_process(pid: int, page: int) -> dict | None:
    """One process's entry, or None if it went away while we read it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    close = stat.rfind(b")")
    comm = stat[stat.find(b"(") + 1:close].decode(errors="replace")
    fields = stat[close + 2:].split()  # state ppid pgrp session ... (field 3 onwards of proc(5))
    args = [p.decode(errors="replace") for p in cmdline.split(b"\0") if p]
    return {
        "pid": pid,
        "ppid": int(fields[1]),
        "pgid": int(fields[2]),
        "state": fields[0].decode(),
        "uid": uid,
        "rss_bytes": int(fields[21]) * page,
        "cmd": " ".join(args) if args else f"[{comm}]",
    }
