"""The uid/gid range that root inside a sandbox maps to on the host.

Every sandbox of the process runtime runs in a user namespace where container uid 0 is host
uid HOST_BASE, so root inside is an unprivileged nobody outside. Images are stored "shifted"
(owned by HOST_BASE + their in-image uid) because runc 1.1 has no idmapped mounts.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

HOST_BASE = 100000
SIZE = 65536


def shift_tree(root: Path, delta: int = HOST_BASE) -> None:
    """Add `delta` to the owner and group of every entry under `root` (delta may be negative).

    Entries whose ids are already outside the namespace's range are left as they are when
    shifting up (a re-run after an interruption must not shift twice).
    """
    for dirpath, dirnames, filenames in os.walk(root):
        _shift(dirpath, delta)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            _shift(os.path.join(dirpath, name), delta)


def _shift(path: str, delta: int) -> None:
    st = os.lstat(path)
    uid, gid = st.st_uid + delta, st.st_gid + delta
    if delta > 0 and (st.st_uid >= HOST_BASE or st.st_gid >= HOST_BASE):
        return
    if uid < 0 or gid < 0 or uid >= HOST_BASE + SIZE or gid >= HOST_BASE + SIZE:
        return
    os.lchown(path, uid, gid)
    # chown clears set-uid/set-gid bits; put them back (sudo, passwd need them).
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o6000:
        os.chmod(path, stat.S_IMODE(st.st_mode))
