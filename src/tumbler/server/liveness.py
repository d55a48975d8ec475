"""Is a sandbox's init (its agent) alive? Read from /proc, for the service's death watch.

The process runtime makes the server a child subreaper, so a killed init stays a zombie of the
server until the runtime stops the sandbox: /proc/<pid> existing is not enough, its state must
not be Z (zombie) or X (dead).
"""
from __future__ import annotations


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    # The command name (in parentheses) may hold spaces and ')': the state follows the last ')'.
    return stat[stat.rindex(")") + 2] not in "ZX"


def init_alive(runtime, sandbox_id: str) -> bool:
    """Whether the sandbox's init runs; True when the runtime cannot tell (no `init_pid`)."""
    pid_of = getattr(runtime, "init_pid", None)
    if pid_of is None:
        return True
    pid = pid_of(sandbox_id)
    return pid is not None and pid_alive(pid)
