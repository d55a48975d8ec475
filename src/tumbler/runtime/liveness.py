"""Is a sandbox's init (its agent) alive? Read from /proc, for the death watches of the server
and the node host.

The process runtime makes its process (the server, a node host) a child subreaper, so a killed
init stays a zombie of that process until the runtime stops the sandbox: /proc/<pid> existing
is not enough, its state must not be Z (zombie) or X (dead).
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


def reap_zombies_of(sandbox_id: str) -> int:
    """Collect the exit of this process's zombie children that were the sandbox's (its init,
    left behind when the sandbox was removed by another process, e.g. `tumbler local rm`: the
    runtime that reaps it on removal was not ours). Returns how many were collected."""
    import os
    me, reaped = os.getpid(), 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{name}/cgroup") as fh:
                cgroup = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" or int(fields[1]) != me or f"tumbler/{sandbox_id}" not in cgroup:
            continue
        try:
            if os.waitpid(int(name), os.WNOHANG)[0]:
                reaped += 1
        except ChildProcessError:
            pass
    return reaped
