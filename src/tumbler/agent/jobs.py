"""Started processes (E2B's envd process model): a program started in the background, with pipes
or a terminal, whose output any number of readers follow by sequence number.

Ops: `job.start` (returns the pid at once), `job.events` (the output events after a sequence
number, waiting up to `wait` seconds for one; the end event once it exited), `job.input`
(bytes to its stdin or terminal), `job.close_stdin`, `job.resize` (a terminal's size),
`job.signal` (to its whole process group) and `job.list` (the ones still running).

Each job runs in a session and process group of its own (a terminal's controlling one, for a
PTY). A reader thread per job collects its output; at most KEEP_BYTES of it are kept per job
(older events are dropped; a reader that fell behind is told where the kept ones start), and
the last KEEP_DONE finished jobs are kept for readers that come late.
"""
from __future__ import annotations

import fcntl
import os
import pwd
import select
import signal
import struct
import termios
import threading

from . import args as a
from . import children, processes
from .eventlog import EventLog
from .protocol import INVALID, NOT_FOUND, AgentRequestError

KEEP_BYTES = 8 << 20        # output bytes kept per job
KEEP_DONE = 64              # finished jobs kept for late readers
MAX_RUNNING = 512           # jobs running at once
READ_CHUNK = 1 << 16
LINGER = 0.2                # seconds of quiet streams after the exit before the job ends
MAX_TAG = 256

_lock = threading.Lock()
_jobs: dict[int, "Job"] = {}
_done: list[int] = []       # finished pids, oldest first


class Job(EventLog):
    """One started process and the output it wrote, as numbered events."""

    def __init__(self, pid: int, argv: list[str], env: dict, cwd: str, tag: str | None,
                 master: int | None, stdin: int | None, outputs: dict[int, str]):
        super().__init__(KEEP_BYTES)
        self.pid, self.argv, self.env, self.cwd, self.tag = pid, argv, env, cwd, tag
        self.master, self.stdin = master, stdin
        self.outputs = outputs                # fd -> "stdout" / "stderr" / "pty"


def start(req: dict, body: bytes) -> tuple[dict, bytes]:
    argv = a.get(req, "argv", list)
    if not argv or not all(isinstance(x, str) and "\0" not in x for x in argv):
        raise AgentRequestError(INVALID, "'argv' must be a non-empty list of strings without NUL")
    tag = a.get(req, "tag", str, None)
    if tag is not None and len(tag) > MAX_TAG:
        raise AgentRequestError(INVALID, f"tag is longer than {MAX_TAG} characters")
    user = _user(a.get(req, "user", str, None))
    env = dict(os.environ)
    if user is not None:
        env.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    env.update(a.env(req))
    cwd = a.get(req, "cwd", str, None) or (user.pw_dir if user else env.get("HOME", "/"))
    if not os.path.isdir(cwd):
        raise AgentRequestError(INVALID, f"cwd {cwd!r} is not a directory")
    size = req.get("pty")
    with _lock:
        if sum(1 for j in _jobs.values() if j.end is None) >= MAX_RUNNING:
            raise AgentRequestError(INVALID, f"{MAX_RUNNING} started processes run already")
    job = _spawn(argv, env, cwd, tag, user, size, bool(req.get("stdin", False)))
    with _lock:
        _jobs[job.pid] = job
    threading.Thread(target=_follow, args=(job,), name=f"job-{job.pid}", daemon=True).start()
    return {"pid": job.pid}, b""


def events(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Its output events numbered `after` and on, waiting up to `wait` seconds (eventlog.read);
    `end` once the process exited and every event before it was read."""
    job = _job(req)
    result, data = job.read(a.get(req, "after", int, 0), a.get(req, "wait", (int, float), 0))
    return {**result, "pid": job.pid}, data


def send_input(req: dict, body: bytes) -> tuple[dict, bytes]:
    job = _job(req)
    fd = job.master if job.master is not None else job.stdin
    if fd is None:
        raise AgentRequestError(INVALID, f"process {job.pid} has no stdin open (started without "
                                "stdin, or it was closed)")
    view = memoryview(body)
    while view:
        _, ready, _ = select.select([], [fd], [], 5.0)
        if not ready:
            raise AgentRequestError(INVALID, f"process {job.pid} reads no input (5 s)")
        try:
            view = view[os.write(fd, view):]
        except OSError as e:
            raise AgentRequestError(INVALID, f"process {job.pid}: input not written: {e.strerror}")
    return {}, b""


def close_stdin(req: dict, body: bytes) -> tuple[dict, bytes]:
    job = _job(req)
    if job.master is not None:
        raise AgentRequestError(INVALID, "a terminal has no stdin to close; send Ctrl-D (0x04)")
    if job.stdin is not None:
        fd, job.stdin = job.stdin, None
        os.close(fd)
    return {}, b""


def resize(req: dict, body: bytes) -> tuple[dict, bytes]:
    job = _job(req)
    if job.master is None:
        raise AgentRequestError(INVALID, f"process {job.pid} has no terminal to resize")
    _set_size(job.master, req)
    return {}, b""


def send_signal(req: dict, body: bytes) -> tuple[dict, bytes]:
    job = _job(req)
    signum = a.get(req, "signal", int, signal.SIGKILL)
    if signum not in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP):
        raise AgentRequestError(INVALID, "signal must be 1 (HUP), 2 (INT), 9 (KILL) or 15 (TERM)")
    if job.end is None:
        # The job's whole session: a shell on a terminal puts its background jobs in groups
        # of their own, and a killed shell sends them no hangup.
        for group in processes.session_groups(job.pid):
            try:
                os.killpg(group, signum)
            except (ProcessLookupError, PermissionError):
                pass
    return {}, b""


def list_jobs(req: dict, body: bytes) -> tuple[dict, bytes]:
    with _lock:
        running = [j for j in _jobs.values() if j.end is None]
    return {"jobs": [{"pid": j.pid, "argv": j.argv, "cwd": j.cwd, "tag": j.tag,
                      "envs": {k: v for k, v in j.env.items() if k not in os.environ
                               or os.environ[k] != v}} for j in running]}, b""


# -- internals -------------------------------------------------------------------------------

def _job(req: dict) -> Job:
    with _lock:
        if "tag" in req and req.get("pid") is None:
            tag = a.get(req, "tag", str)
            for job in _jobs.values():
                if job.tag == tag and job.end is None:
                    return job
            raise AgentRequestError(NOT_FOUND, f"no running process tagged {tag!r}")
        pid = a.get(req, "pid", int)
        job = _jobs.get(pid)
    if job is None:
        raise AgentRequestError(NOT_FOUND, f"no started process {pid}")
    return job


def _user(name: str | None):
    """The passwd entry to run as, or None for the agent's own user (root inside).

    E2B's templates run commands as "user"; an image without that account runs them as root."""
    if not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        if name == "user":
            return None
        raise AgentRequestError(INVALID, f"no user {name!r} in the sandbox") from None
    return None if entry.pw_uid == os.getuid() else entry


def _set_size(fd: int, size: dict) -> None:
    rows = min(max(int(size.get("rows") or 24), 1), 1000)
    cols = min(max(int(size.get("cols") or 80), 1), 1000)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _spawn(argv, env, cwd, tag, user, size, want_stdin) -> Job:
    if size is not None:
        master, slave = os.openpty()
        _set_size(master, size if isinstance(size, dict) else {})
        fds = {0: slave, 1: slave, 2: slave}
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        fds = {0: in_r, 1: out_w, 2: err_w}
    # Looked up here: NSS takes locks that another thread may hold at the fork.
    groups = os.getgrouplist(user.pw_name, user.pw_gid) if user is not None else None
    try:
        pid = children.spawn(lambda: _fork(argv, env, cwd, fds, user, groups, size is not None))
    finally:
        for fd in set(fds.values()):
            os.close(fd)
    if size is not None:
        return Job(pid, argv, env, cwd, tag, master, None, {master: "pty"})
    if not want_stdin:
        os.close(in_w)
        in_w = None
    return Job(pid, argv, env, cwd, tag, None, in_w, {out_r: "stdout", err_r: "stderr"})


def _fork(argv, env, cwd, fds, user, groups, terminal):
    pid = os.fork()
    if pid:
        return pid, pid
    try:  # the child: set up, then exec
        os.setsid()
        high = {target: fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for target, fd in fds.items()}
        for target, fd in high.items():
            os.dup2(fd, target)
        if terminal:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.closerange(3, 4096)
        os.chdir(cwd)
        if user is not None:
            os.setgroups(groups)
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        os.write(2, f"{argv[0]}: {e.strerror}\n".encode())
    finally:
        os._exit(127)


def _follow(job: Job) -> None:
    """Read the job's output until its streams close (or, once it exited, stay quiet for
    LINGER seconds: a background child of it may hold them open), then note its end."""
    open_fds = dict(job.outputs)
    code = None
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [], LINGER if code is not None else 1.0)
        for fd in ready:
            try:
                data = os.read(fd, READ_CHUNK)
            except OSError:     # EIO: the terminal's last holder closed it
                data = b""
            if data:
                job.add(open_fds[fd], data)
            else:
                del open_fds[fd]
        if not ready:
            if code is not None:
                break
            code = children.wait(job.pid, os.WNOHANG)   # None while it runs
    if code is None:
        code = children.wait(job.pid)
    _finish(job, code)


def _finish(job: Job, code: int | None) -> None:
    for fd in [*job.outputs, job.stdin]:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    job.stdin = None
    signalled = code is not None and code > 128
    job.finish({"exit_code": code if code is not None else -1, "exited": not signalled,
                "status": f"signal: {_signame(code - 128)}" if signalled else f"exit status {code}"})
    with _lock:
        _done.append(job.pid)
        while len(_done) > KEEP_DONE:
            _jobs.pop(_done.pop(0), None)


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name.removeprefix("SIG").lower()
    except ValueError:
        return str(num)
