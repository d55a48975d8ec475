"""Removing a directory tree that a sandbox may have shaped: no recursion, no long paths, no links.

`shutil.rmtree` on Python 3.11 recurses once per level: a 1,500-level tree made inside a sandbox
raised RecursionError (which `ignore_errors` does not catch) and left a `.build-*` directory
that broke every later snapshot. Paths of such a tree also pass PATH_MAX. So this walks with one
directory fd at a time, descending with `openat(O_NOFOLLOW)` and climbing back with `..`, and
never holds more than two fds whatever the depth.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | Path, *, ignore_errors: bool = True) -> bool:
    """Remove `path` (a directory tree, a file or a link); True when it is gone.

    With ignore_errors (the default) a failure is logged and False returned, never raised, so
    a sweep goes on past a tree it cannot remove.
    """
    try:
        _remove(Path(path))
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        if not ignore_errors:
            raise
        log.warning("could not remove %s: %s", path, e)
        return False


def _remove(path: Path) -> None:
    try:
        fd = os.open(path, _DIR)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):   # a file or a symlink: unlink it
            os.unlink(path)
            return
        raise
    depth = 0
    try:
        while True:
            child = _empty_out(fd)
            if child is not None:        # a non-empty subdirectory: go down into it
                nxt = os.open(child, _DIR, dir_fd=fd)
                os.close(fd)
                fd, depth = nxt, depth + 1
                continue
            if depth == 0:
                break
            up = os.open("..", _DIR, dir_fd=fd)   # now empty; its parent's rescan removes it
            os.close(fd)
            fd, depth = up, depth - 1
    finally:
        os.close(fd)
    os.rmdir(path)


def _empty_out(fd: int) -> str | None:
    """Unlink every file and empty directory in `fd`; the name of a non-empty one, if any."""
    with os.scandir(fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if not is_dir:
            os.unlink(name, dir_fd=fd)
            continue
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise
            return name
    return None
