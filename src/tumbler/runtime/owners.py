"""Who owns a sandbox made by a library process, and whether that owner still lives.

A `LocalSandbox` labels its sandbox with its process (`tumbler.owner-process` = "pid:start time", the
start time from /proc so a reused pid is not mistaken for the owner). A test run killed
mid-suite, or a trainer that crashed, left its whole batch running with no one to remove it;
now the next process that opens the runtime removes every sandbox whose owner is gone
(SIGKILL included). A sandbox made with `keep=True`, or by the server or a node host (which
reconcile their own on restart), has no owner label and is left alone.
"""
from __future__ import annotations

import os

OWNER_LABEL = "tumbler.owner-process"   # (the docker backend's "tumbler.owner" is its host and home)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Field 22, counted after the command name (which may hold spaces and parentheses).
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


def this_process() -> str:
    """The owner label value of the calling process."""
    pid = os.getpid()
    return f"{pid}:{_start_time(pid)}"


def is_alive(owner: str) -> bool:
    """Whether the process an owner label names still runs (a malformed label counts as alive:
    nothing is removed on a guess)."""
    pid, _, start = owner.partition(":")
    if not pid.isdigit() or not start:
        return True
    return _start_time(int(pid)) == start


def describe(labels: dict[str, str]) -> str:
    """Whose a sandbox is, for `tumbler sandbox ls`."""
    owner = labels.get(OWNER_LABEL)
    if owner is not None:
        return f"process {owner.partition(':')[0]}" + ("" if is_alive(owner) else " (gone)")
    if "tumbler.node-host" in labels:
        return f"node host {labels['tumbler.node-host']}"
    if "tumbler.pool" in labels:
        return f"server pool {labels['tumbler.pool']}"
    return "a server, or kept"
