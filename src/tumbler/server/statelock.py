"""One live server per state directory: an exclusive lock on `server.lock` in it, naming the
holder (pid, host, port) so that a second server can say who holds it.

The registry, the warm pools' owner (its database URL) and the reclaim of a killed server's
pooled sandboxes all assume that one server uses a state directory at a time: a second one on
the same directory would take the first's pooled sandboxes for orphans and remove them. The lock
is a flock(2), so it goes with its holder: a killed server leaves no stale lock behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from tumbler.errors import Conflict

LOCK_NAME = "server.lock"


class StateLock:
    """The lock on `state_dir`, held from `acquire()` to `release()`."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, host: str, port: int) -> None:
        """Take the lock and write our pid, host and port into it; Conflict if a live server
        holds it (the message names that server)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(busy_message(self.path.parent, holder(self.path.parent))) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": host, "port": port,
                                 "since": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def holder(state_dir: Path) -> dict | None:
    """What the lock file of `state_dir` says of its holder ({pid, host, port}), if it says."""
    try:
        return json.loads((Path(state_dir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None


def busy_message(state_dir: Path, who: dict | None) -> str:
    by = (f"a live server (pid {who.get('pid')}, {who.get('host')}:{who.get('port')})"
          if who else "a live server")
    return (f"state dir {state_dir} is in use by {by}; a second server on it would take that "
            "server's sandboxes and warm pools for its own. Stop that server first, or give this "
            "one a state dir of its own (--state-dir DIR)")
