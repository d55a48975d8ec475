"""The agent's children: which ones a handler waits on itself, and a reaper for all the others.

As PID 1 of the sandbox (or a child subreaper on the host) the agent inherits every orphan:
background jobs whose shell has gone, daemons, `nohup` runs. Their zombies must be reaped, but
the reaper must never collect a child that a session or an exec is waiting on, or that waiter
would lose its exit status. So spawning and reaping share one lock: a pid is registered as
owned in the same critical section that creates it, and the reaper only collects pids that are
not owned.
"""
from __future__ import annotations

from . import logs
import os
import threading
import time

log = logs.get("tumbler.agent.children")

PEEK_OWNED_PAUSE = 0.005      # seconds; the owner of a peeked zombie is about to wait on it
NO_CHILDREN_PAUSE = 0.05      # seconds; with no children at all there is nothing to block on

_lock = threading.Lock()
_owned: set[int] = set()


def spawn(start):
    """Call `start()` (which forks and returns an object or pid) with the new pid marked owned.

    `start` returns (pid, value); spawn returns value. The caller must call `release(pid)`
    after it has waited for the child.
    """
    with _lock:
        pid, value = start()
        if pid:
            _owned.add(pid)
        return value


def release(pid: int) -> None:
    """The owner has reaped `pid`; the reaper may collect that number again when reused."""
    with _lock:
        _owned.discard(pid)


def _reap_one() -> None:
    try:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        time.sleep(NO_CHILDREN_PAUSE)
        return
    except InterruptedError:
        return
    if info is None:
        return
    with _lock:
        if info.si_pid not in _owned:
            try:
                os.waitpid(info.si_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return
    time.sleep(PEEK_OWNED_PAUSE)


def _reap_forever() -> None:
    while True:
        try:
            _reap_one()
        except Exception:  # the reaper must outlive any surprise
            log.exception("reaper error")
            time.sleep(NO_CHILDREN_PAUSE)


def start_reaper() -> None:
    """Start the daemon thread that reaps zombies nobody else waits for."""
    threading.Thread(target=_reap_forever, name="reaper", daemon=True).start()


def become_subreaper() -> None:
    """Make orphans of our descendants our children (prctl PR_SET_CHILD_SUBREAPER), as PID 1 has."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def shell_exit_code(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128 + the signal that killed it."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def wait(pid: int, flags: int = 0) -> int | None:
    """waitpid an owned child; returns its shell-style exit code, or None if it still runs.

    The pid is released once reaped.
    """
    try:
        got, status = os.waitpid(pid, flags)
    except ChildProcessError:
        release(pid)
        return None if flags & os.WNOHANG else 0
    if got == 0:
        return None
    release(pid)
    return shell_exit_code(status)
