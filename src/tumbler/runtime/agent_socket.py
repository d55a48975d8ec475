"""Reaching an agent whose socket lies in a directory that the sandbox can write.

A container backend cannot hand the agent a listening socket (the process runtime passes it as
stdin), so the agent binds `agent.sock` in a host directory bind-mounted into the sandbox. Root
in the sandbox may replace that file, e.g. by a symlink to a host socket such as the engine's:
connecting to it by path would then reach whatever the sandbox chose, as host root.

So the host never connects through the shared directory. `pin` opens the name there with
O_PATH|O_NOFOLLOW (a symlink is opened as itself, not followed), checks that it is a socket, and
hard-links that very inode into a host-only directory. Connections go to the pinned name:
a unix socket is found by its inode, so the pinned name reaches the socket the agent bound,
whatever happens to the shared name afterwards. The pinned path is an ordinary path, so any
`AgentClient` (in this process or another) can use it unchanged.
"""
from __future__ import annotations

import ctypes
import os
import socket
import stat
from pathlib import Path

from tumbler.errors import RuntimeFailure, SandboxError

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400


def pin(shared_dir: Path, name: str, pinned: Path) -> bool:
    """Link socket `shared_dir/name` to `pinned` without following links. False if not there yet.

    Raises SandboxError if the name is there but is not a socket (a symlink, a file, a fifo).
    """
    dir_fd = os.open(shared_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISSOCK(mode):
            raise SandboxError(f"{shared_dir / name} is not a socket (mode {mode:o}): the sandbox "
                               "replaced its agent's socket; reset the sandbox")
        tmp = pinned.with_name(f".{pinned.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        _link_fd(fd, tmp)
        os.replace(tmp, pinned)
    finally:
        os.close(fd)
    return True


def _link_fd(fd: int, dest: Path) -> None:
    """Give the inode that `fd` holds the name `dest` (os.link would link /proc's magic link
    itself: it calls link(2), which does not follow; linkat with AT_SYMLINK_FOLLOW does)."""
    src = f"/proc/self/fd/{fd}".encode()
    if _libc.linkat(AT_FDCWD, src, AT_FDCWD, str(dest).encode(), AT_SYMLINK_FOLLOW) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"cannot pin the agent's socket at {dest}: {os.strerror(err)} "
                             "(the shared and the host-only directory must be on one filesystem)")


def answers(path: Path, timeout_s: float = 1.0) -> bool:
    """Whether something accepts connections on socket `path` (the agent has called listen)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        sock.close()
