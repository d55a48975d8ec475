"""Overlay mounts: a sandbox's root = its image's read-only layers + its own writable upper dir."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

from tumbler.errors import InvalidRequest, RuntimeFailure

MS_NOSUID, MS_NODEV = 2, 4
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2


def mount_overlay(layers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount `layers` (top first) under `upper` at `target` (a syscall: no `mount` process)."""
    for p in (*layers, upper, work, target):
        if any(c in str(p) for c in ":,"):
            raise InvalidRequest(f"path {p} holds ':' or ',', which overlayfs cannot take")
    opts = (f"lowerdir={':'.join(map(str, layers))},upperdir={upper},workdir={work},"
            "index=off,metacopy=off").encode()
    # nosuid, nodev: a set-uid file or a device node planted by a sandbox's root is inert for
    # any host user who reaches it (the merged tree is on the host from this mount until the
    # sandbox's init has its own copy; its upper dir is, on the disk's mount, all along).
    if _libc.mount(b"overlay", str(target).encode(), b"overlay", MS_NOSUID | MS_NODEV, opts) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"overlay mount at {target} failed: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Detach the mount at `target` if there is one."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise RuntimeFailure(f"unmount of {target} failed: {os.strerror(err)}")


def is_mounted(target: Path) -> bool:
    """Whether a filesystem is mounted at `target`: its device is not its parent's. Ours are
    overlay and ext4-on-loop mounts, never a bind of the filesystem beneath, so two stats
    answer, where reading /proc/self/mountinfo cost ~1.7 us per mount of the host's: 3.5 ms
    with a node of 1,000 sandboxes, at every start and remove."""
    try:
        return os.stat(target).st_dev != os.stat(target.parent).st_dev
    except FileNotFoundError:
        return False
    except OSError:   # not ours to guess: a caller may delete the tree if it says no
        needle = f" {target} "
        with open("/proc/self/mountinfo") as fh:
            return any(needle in line for line in fh)
