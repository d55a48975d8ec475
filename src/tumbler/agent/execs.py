"""The `exec` op: run one program (or one /bin/sh -c string) to completion, outside any session.

The program runs in a new session and process group, with the request's body as its stdin and
its stdout and stderr captured separately (each capped, each counted). On timeout the whole
group gets SIGTERM, then SIGKILL after a short grace. A program that cannot be started (missing,
not executable) is answered like a shell would: exit code 127 (or 126) and a message on stderr.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time

from . import args as a
from . import children
from .protocol import INVALID, AgentRequestError

DEFAULT_TIMEOUT = 300.0           # seconds
MAX_TIMEOUT = 7 * 24 * 3600.0     # seconds
DEFAULT_MAX_OUTPUT = 64 << 20     # bytes kept per stream
MAX_OUTPUT_CEILING = 256 << 20    # bytes per stream
TERM_GRACE = 0.5                  # seconds between SIGTERM and SIGKILL of a timed-out group
LINGER = 0.05                     # seconds to wait for a pipe's EOF after the program exited
READ_CHUNK = 1 << 16              # bytes
WRITE_CHUNK = 1 << 16             # bytes of stdin written per ready event


def run(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Run the program; result and body (stdout then stderr) are described in `tumbler.agent`."""
    argv = argv_of(req)
    env = dict(os.environ)
    env.update(a.env(req))
    cwd = a.get(req, "cwd", str, None)
    if cwd is not None and not os.path.isdir(cwd):
        raise AgentRequestError(INVALID, f"cwd {cwd!r} is not a directory")
    timeout = a.seconds(req, "timeout", DEFAULT_TIMEOUT, MAX_TIMEOUT)
    cap = a.size(req, "max_output", DEFAULT_MAX_OUTPUT, MAX_OUTPUT_CEILING)
    started = time.monotonic()
    try:
        proc = children.spawn(lambda: _popen(argv, env, cwd))
    except OSError as e:
        code = 126 if isinstance(e, PermissionError) else 127
        err = f"exec: {argv[0]}: {e.strerror}\n".encode()
        return _result(code, False, [b"", err], [0, len(err)], started), err
    code = None
    try:
        outputs, totals, timed_out = _communicate(proc, body, cap, started + timeout)
    finally:
        if not _exited(proc.pid):  # _communicate failed, or left after the program's pipes closed
            _killpg(proc.pid, signal.SIGKILL)
        code = children.wait(proc.pid)
        proc.returncode = code  # reaped here: Popen must never wait on (a reuse of) that pid
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    return _result(None if timed_out else code, timed_out, outputs, totals, started), outputs[0] + outputs[1]


def argv_of(req: dict) -> list[str]:
    """The argv a request asks for: `argv` as given, or `command` run by /bin/sh -c."""
    argv = req.get("argv")
    command = req.get("command")
    if (argv is None) == (command is None):
        raise AgentRequestError(INVALID, "give exactly one of 'argv' (a list of strings) and "
                                "'command' (a string run by /bin/sh -c)")
    if command is not None:
        argv = ["/bin/sh", "-c", a.get(req, "command", str)]
    elif not argv or not isinstance(argv, list) or not all(isinstance(x, str) for x in argv):
        raise AgentRequestError(INVALID, "'argv' must be a non-empty list of strings")
    if any("\0" in x for x in argv):   # the kernel's argv cannot hold one: say so, not 500
        raise AgentRequestError(INVALID, "argv and command may not contain a NUL byte")
    return argv


def _popen(argv: list[str], env: dict, cwd: str | None):
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True)
    return proc.pid, proc


def _communicate(proc, stdin: bytes, cap: int, deadline: float):
    """Feed stdin, collect both outputs until the program exits (or the deadline passes).

    Returns ([stdout, stderr], [stdout_total, stderr_total], timed_out).
    """
    outputs, totals = [bytearray(), bytearray()], [0, 0]
    fds = {proc.stdout.fileno(): 0, proc.stderr.fileno(): 1}
    stdin_view = memoryview(stdin)
    in_fd = proc.stdin.fileno()
    if stdin_view:
        os.set_blocking(in_fd, False)
    else:
        proc.stdin.close()
    pidfd = _pidfd(proc.pid)
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    if stdin_view:
        poller.register(in_fd, select.POLLOUT)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    timed_out, exited_at = False, None
    try:
        while fds or exited_at is None:
            now = time.monotonic()
            if exited_at is not None and now - exited_at > LINGER:
                break  # a background descendant holds the pipes open; do not wait for it
            if now >= deadline and not timed_out:
                timed_out = True
                _terminate(proc)
                deadline = now + TERM_GRACE + 1.0
            elif now >= deadline:
                break
            wait = min(deadline - now, LINGER if (exited_at or pidfd is None) else deadline - now)
            for fd, event in poller.poll(max(wait, 0) * 1000):
                if fd == pidfd:
                    poller.unregister(pidfd)
                    exited_at = time.monotonic()
                elif fd == in_fd:
                    stdin_view = _feed(in_fd, stdin_view, poller, proc)
                elif fd in fds:
                    _collect(fd, fds, outputs, totals, cap, poller)
            if exited_at is None and pidfd is None and _exited(proc.pid):
                exited_at = time.monotonic()
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return [bytes(o) for o in outputs], totals, timed_out


def _feed(fd: int, view: memoryview, poller, proc) -> memoryview:
    try:
        n = os.write(fd, view[:WRITE_CHUNK])
    except BrokenPipeError:
        n = len(view)  # the program stopped reading; what it did not read is dropped, as in a shell
    view = view[n:]
    if not view:
        poller.unregister(fd)
        proc.stdin.close()
    return view


def _collect(fd: int, fds: dict, outputs, totals, cap: int, poller) -> None:
    data = os.read(fd, READ_CHUNK)
    i = fds[fd]
    if not data:
        poller.unregister(fd)
        del fds[fd]
        return
    totals[i] += len(data)
    room = cap - len(outputs[i])
    if room > 0:
        outputs[i] += data[:room]


def _terminate(proc) -> None:
    """SIGTERM the program's process group, SIGKILL it if still there after TERM_GRACE seconds."""
    _killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + TERM_GRACE
    while time.monotonic() < end:
        if _exited(proc.pid):
            break
        time.sleep(0.01)
    _killpg(proc.pid, signal.SIGKILL)


def _exited(pid: int) -> bool:
    """True once `pid` is a zombie or gone (without reaping it)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _result(code, timed_out: bool, outputs, totals, started: float) -> dict:
    return {
        "exit_code": code,
        "timed_out": timed_out,
        "stdout_size": totals[0],
        "stderr_size": totals[1],
        "stdout_len": len(outputs[0]),
        "stdout_truncated": totals[0] > len(outputs[0]),
        "stderr_truncated": totals[1] > len(outputs[1]),
        "duration_s": round(time.monotonic() - started, 6),
    }
