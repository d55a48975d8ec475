"""A Podman container's writable layer, seen from the host: its own disk, and its ids at commit.

Podman keeps a container's writable layer in its overlay storage as a directory
`<graphroot>/overlay/<layer>/` holding `diff/` (the upper dir), `work/`, `merged/` and two small
files; `GraphDriver.Data.UpperDir` and `WorkDir` of the container's inspect name it.

**Its own disk.** `move_to_disk` copies that directory onto a filesystem of the sandbox's own (an
ext4 image of `Limits.disk` bytes, `disks.py`) and leaves a symlink in its place. The kernel
resolves the symlink when Podman mounts the overlay, so the container's writes land on the
sandbox's disk and fail with ENOSPC there. Podman removes a container's layer with RemoveAll,
which removes a symlink and not what it points to, so the disk is unmounted by its owner after.
(Podman's own quota, `--storage-opt size=`, needs project quotas under its storage: the kernel
here has neither CONFIG_XFS_QUOTA nor CONFIG_QFMT_V2, so neither xfs nor ext4 offers them.)

**Ids at commit.** With `--userns=auto` on a kernel with idmapped mounts, Podman 4.3's storage
maps only the image's layers into the container's range; the upper dir is not mapped, so the
files the container writes lie there with their host ids (container uid 0 = host uid 1000000),
and the container's layer records no mapping. A commit tars the upper dir as it lies: the image
gets host ids, and a sandbox of it sees its own files owned by nobody. (containers/storage
`store.CreateContainer`: when `canUseShifting`, the layer is created with HostUIDMapping;
upstream: podman-container-tools/container-libs issue 914.) `container_ids` puts every entry of
the upper dir at its container ids for the commit and back afterwards; the caller pauses the
container meanwhile.
"""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tumbler.errors import RuntimeFailure

CAPS_XATTR = "security.capability"
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_REVISION_3 = 0x03000000
VFS_CAP_REVISION_MASK = 0xFF000000
COPY_TIMEOUT_S = 120


@dataclass(frozen=True)
class IdRange:
    """Container ids [inside, inside + size) are host ids [host, host + size)."""

    inside: int
    host: int
    size: int

    @classmethod
    def parse(cls, text: str) -> "IdRange":
        """From Podman's "inside:host:size"."""
        inside, host, size = (int(x) for x in text.split(":"))
        return cls(inside, host, size)

    def to_container(self, host_id: int) -> int | None:
        if self.host <= host_id < self.host + self.size:
            return host_id - self.host + self.inside
        return None


def to_container(ranges: list[IdRange], host_id: int) -> int | None:
    """The container id of `host_id`, or None if the container has none for it."""
    for r in ranges:
        inside = r.to_container(host_id)
        if inside is not None:
            return inside
    return None


def layer_dir(upper: str, work: str) -> Path:
    """The directory of a container's writable layer, from its inspect's UpperDir and WorkDir."""
    layer = Path(upper).parent
    if not upper or Path(work).parent != layer:
        raise RuntimeFailure(f"the container's upper dir {upper!r} and work dir {work!r} are not "
                             "in one layer directory: not Podman's overlay storage")
    return layer


def move_to_disk(layer: Path, disk: Path) -> None:
    """Copy the layer directory onto the mounted disk `disk` and put a symlink in its place.

    Done while the container is not running (Podman mounts the layer at start). Idempotent:
    a layer that already points at `disk` is left as it is."""
    if layer.is_symlink():
        if Path(os.readlink(layer)) == disk:
            return
        raise RuntimeFailure(f"the container's layer {layer} is a symlink to {os.readlink(layer)}, "
                             f"not to its disk {disk}")
    # cp -a keeps owners, modes, xattrs (trusted.overlay.*) and whiteouts of a used layer.
    try:
        proc = subprocess.run(["cp", "-a", "--", f"{layer}/.", str(disk)], capture_output=True,
                              timeout=COPY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"copying the layer {layer} to its disk took over {COPY_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise RuntimeFailure(f"copying the layer {layer} to its disk {disk} failed: "
                             f"{proc.stderr.decode(errors='replace').strip()[-500:]}")
    aside = layer.with_name(f"{layer.name}.tumbler-moved")
    os.rename(layer, aside)
    try:
        os.symlink(disk, layer)
    except OSError:
        os.rename(aside, layer)
        raise
    shutil.rmtree(aside)


@dataclass
class _Changed:
    path: str
    uid: int
    gid: int
    mode: int
    caps: bytes | None


@contextmanager
def container_ids(upper: Path, uids: list[IdRange], gids: list[IdRange]) -> Iterator[int]:
    """Within the block, every entry under `upper` is owned by its container ids (yields how
    many changed); afterwards each gets its host ids, mode and file capabilities back.

    chown(2) clears set-uid/set-gid bits and file capabilities, so both are put back after each
    change. A capability stored for the container's root (a v3 xattr whose root id is the host
    id of container uid 0) is written in the form of an image's (v2, no root id), as an engine
    without the mapping would have stored it. Entries with no container id (the whiteouts,
    which overlayfs makes as host root) are left alone; a hard-linked inode changes once."""
    root_host = next((r.host for r in uids if r.inside == 0), None)
    changed: list[_Changed] = []
    try:
        seen: set[int] = set()
        for path in _walk(upper):
            st = os.lstat(path)
            if st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            uid, gid = to_container(uids, st.st_uid), to_container(gids, st.st_gid)
            if uid is None and gid is None:
                continue
            entry = _Changed(path, st.st_uid, st.st_gid, st.st_mode, _caps(path, st.st_mode))
            changed.append(entry)
            _chown(entry, st.st_uid if uid is None else uid, st.st_gid if gid is None else gid,
                   _image_caps(entry.caps, root_host))
        yield len(changed)
    finally:
        failed = []
        for entry in reversed(changed):
            try:
                _chown(entry, entry.uid, entry.gid, entry.caps)
            except OSError as exc:  # put back every other one all the same
                failed.append(f"{entry.path}: {exc.strerror}")
        if failed:
            raise RuntimeFailure(f"{len(failed)} files of the layer {upper} kept their container "
                                 f"ids after the commit (first: {failed[0]}); reset the sandbox")


def _walk(root: Path) -> Iterator[str]:
    yield str(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def _caps(path: str, mode: int) -> bytes | None:
    if not stat.S_ISREG(mode):
        return None
    try:
        return os.getxattr(path, CAPS_XATTR, follow_symlinks=False)
    except OSError:
        return None


def _image_caps(caps: bytes | None, root_host: int | None) -> bytes | None:
    """A v3 capability of the container's root as v2 (an image's form); others as they are."""
    if caps is None or len(caps) != 24:
        return caps
    magic, = struct.unpack_from("<I", caps)
    rootid, = struct.unpack_from("<I", caps, 20)
    if magic & VFS_CAP_REVISION_MASK != VFS_CAP_REVISION_3 or rootid != root_host:
        return caps
    magic = VFS_CAP_REVISION_2 | (magic & ~VFS_CAP_REVISION_MASK)
    return struct.pack("<I", magic) + caps[4:20]


def _chown(entry: _Changed, uid: int, gid: int, caps: bytes | None) -> None:
    os.chown(entry.path, uid, gid, follow_symlinks=False)
    if stat.S_ISLNK(entry.mode):
        return
    if entry.mode & 0o6000:
        os.chmod(entry.path, stat.S_IMODE(entry.mode))
    if caps is not None:
        os.setxattr(entry.path, CAPS_XATTR, caps, follow_symlinks=False)
