"""A sandbox's own size-limited filesystem: an ext4 image file, loop-mounted, holding its
overlay upper and work dirs. Writes past `Limits.disk` (or `Limits.inodes`) fail with ENOSPC
inside the sandbox; the host's disk never fills through a sandbox.

Why a loop-mounted ext4 image and not the alternatives (measured in docs/SECURITY.md):
- a tmpfs per sandbox costs nothing to make, but its pages are charged to the sandbox's
  memory cgroup with no swap to go to: a write past the memory limit OOM-kills a process
  (often the agent) instead of failing with ENOSPC, idle sandboxes' files pin RAM, and a
  stopped sandbox's files vanish with a host reboot;
- project quotas need a filesystem mounted with `prjquota`, which this host's root is not
  (it cannot be turned on while mounted).
The image is cheap: a template is made once per (size, inodes) by mkfs.ext4 and each sandbox
gets a sparse copy (~150 KiB of metadata); attaching the loop device and mounting are two
ioctls and a mount(2) (no processes).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import secrets
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

from tumbler.errors import RuntimeFailure
from tumbler.runtime import idmap

LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_AUTOCLEAR = 4   # the device detaches itself when the filesystem is unmounted
LO_FLAGS_DIRECT_IO = 16  # no second copy of every page in the host's page cache
LOOP_MAJOR = 7
BLOCK_SIZE = 4096
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2
# `discard` gives deleted files' blocks back to the host (holes punched in the image file);
# `noinit_itable` keeps the kernel from zeroing inode tables in the background (they are holes).
MOUNT_OPTIONS = b"discard,noinit_itable,errors=remount-ro"
ATTACH_TRIES = 32
DETACH_TIMEOUT_S = 10.0
MKFS_TIMEOUT_S = 60

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_template_lock = threading.Lock()


def template(templates_dir: Path, size: int, inodes: int) -> Path:
    """The empty filesystem image every sandbox disk of this size starts as (made once)."""
    path = templates_dir / f"ext4-{size}-{inodes}.img"
    if path.exists():
        return path
    with _template_lock:
        if path.exists():
            return path
        templates_dir.mkdir(parents=True, exist_ok=True)
        tmp = templates_dir / f".build-{path.name}-{secrets.token_hex(4)}"
        with open(tmp, "wb") as fh:
            fh.truncate(size)
        # No journal: a sandbox's layer is scratch space, and a journal costs writes.
        # assume_storage_prezeroed: the file's holes read as zeros, so no table needs zeroing.
        cmd = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK_SIZE), "-m", "0", "-N", str(inodes),
               "-O", "^has_journal,^resize_inode", "-L", "tumbler",
               "-E", "lazy_itable_init=1,assume_storage_prezeroed=1,nodiscard", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=MKFS_TIMEOUT_S)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise RuntimeFailure("mkfs.ext4 is missing: `apt-get install e2fsprogs`") from None
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise RuntimeFailure(f"mkfs.ext4 for a {size}-byte sandbox disk failed: "
                                 f"{proc.stderr.decode(errors='replace').strip()}")
        os.replace(tmp, path)
    return path


def make_image(template_path: Path, dest: Path) -> None:
    """Copy `template_path` to `dest` keeping its holes (only the metadata blocks are written)."""
    with open(template_path, "rb") as src, open(dest, "xb") as dst:
        size = os.fstat(src.fileno()).st_size
        os.ftruncate(dst.fileno(), size)
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only holes from here on
                    break
                raise
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            pos = data
            while pos < hole:
                n = os.copy_file_range(src.fileno(), dst.fileno(), hole - pos, pos, pos)
                if n == 0:
                    break
                pos += n
            offset = hole


def sync(target: Path) -> None:
    """Write the mounted filesystem at `target` through to its image file (syncfs(2)), so a
    copy of the file taken now holds every write made before (the fork's disk copy)."""
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise RuntimeFailure(f"syncing the sandbox disk at {target} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def mount(image: Path, target: Path, loop_dir: Path) -> str:
    """Attach `image` to a free loop device and mount it at `target`, then make sure the
    overlay's upper and work dirs exist on it, owned by the sandbox's root. Returns the device."""
    dev = mount_fs(image, target, loop_dir)
    for name in ("upper", "work"):
        path = target / name
        if not path.exists():
            path.mkdir(mode=0o755)
            os.chown(path, idmap.HOST_BASE, idmap.HOST_BASE)
    return dev


def mount_fs(image: Path, target: Path, loop_dir: Path) -> str:
    """Attach `image` to a free loop device and mount it at `target`; returns the device."""
    target.mkdir(exist_ok=True)
    fd, dev = _attach(image, loop_dir)
    try:
        if _libc.mount(dev.encode(), str(target).encode(), b"ext4", MS_NOSUID | MS_NODEV,
                       MOUNT_OPTIONS) != 0:
            err = ctypes.get_errno()
            raise RuntimeFailure(f"mounting the sandbox disk {image} at {target} failed: "
                                 f"{os.strerror(err)}")
    finally:
        # From here the mount holds the device; with AUTOCLEAR it detaches when unmounted.
        os.close(fd)
    return dev


def mount_tmpfs(target: Path, size: int, inodes: int) -> None:
    """A tmpfs of `size` bytes and `inodes` files at `target` (nosuid, nodev, noexec)."""
    target.mkdir(exist_ok=True)
    options = f"size={size},nr_inodes={inodes},mode=0755".encode()
    if _libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   options) != 0:
        err = ctypes.get_errno()
        raise RuntimeFailure(f"mounting a tmpfs at {target} failed: {os.strerror(err)}")


def wait_detached(dev: str, image: Path, timeout_s: float = DETACH_TIMEOUT_S) -> None:
    """Wait until loop device `dev` no longer serves `image`.

    Unmounts are lazy: the filesystem (and with AUTOCLEAR its loop device) lives on until the
    last reference goes, e.g. the overlay in a dying sandbox's mount namespace. Mounting the same
    image on a second device before then would run two ext4 instances on one file and corrupt it.
    """
    backing = Path("/sys/block") / Path(dev).name / "loop" / "backing_file"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if backing.read_text().strip() != str(image):
                return
        except OSError:  # detached: the loop attributes are gone
            return
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"the disk {image} is still attached to {dev} after {timeout_s} s "
                                 "(a process outside the sandbox may hold it)")
        time.sleep(0.002)


def unmount(target: Path) -> None:
    """Detach the disk mounted at `target`, if any (the loop device goes with it)."""
    if _libc.umount2(str(target).encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise RuntimeFailure(f"unmount of the sandbox disk at {target} failed: {os.strerror(err)}")


def loop_devices_of(path_part: str) -> list[str]:
    """Loop devices whose backing file's path contains `path_part` (for leak checks)."""
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        try:
            if path_part in backing.read_text():
                found.append(backing.parent.parent.name)
        except OSError:
            continue
    return found


def _attach(image: Path, loop_dir: Path) -> tuple[int, str]:
    """Bind `image` to a free loop device; returns the open device fd and its path."""
    img_fd = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        os.close(img_fd)
        raise RuntimeFailure(f"cannot open /dev/loop-control ({exc.strerror}): the sandbox disk "
                             "quota needs loop devices; `modprobe loop`") from None
    try:
        for _ in range(ATTACH_TRIES):
            number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            dev = _device_node(number, loop_dir)
            fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(fd, LOOP_CONFIGURE, _loop_config(img_fd, str(image)))
                return fd, dev
            except OSError as exc:
                os.close(fd)
                if exc.errno != errno.EBUSY:  # EBUSY: another thread took this one first
                    raise RuntimeFailure(f"attaching {image} to {dev} failed: {exc.strerror}") from None
            time.sleep(0.001)
        raise RuntimeFailure(f"no free loop device for {image} after {ATTACH_TRIES} tries")
    finally:
        os.close(ctl)
        os.close(img_fd)


def _device_node(number: int, loop_dir: Path) -> str:
    """/dev/loopN, or a node of our own where /dev is not a devtmpfs that makes it."""
    dev = f"/dev/loop{number}"
    if os.path.exists(dev):
        return dev
    loop_dir.mkdir(parents=True, exist_ok=True)
    own = loop_dir / f"loop{number}"
    if not own.exists():
        os.mknod(own, stat.S_IFBLK | 0o600, os.makedev(LOOP_MAJOR, number))
    return str(own)


def _loop_config(backing_fd: int, name: str) -> bytes:
    """struct loop_config (linux/loop.h): fd, block_size, loop_info64, 8 reserved u64."""
    info = struct.pack("=5Q4I64s64s32s2Q", 0, 0, 0, 0, 0, 0, 0, 0,
                       LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                       name.encode()[:63], b"", b"", 0, 0)
    return struct.pack("=II", backing_fd, BLOCK_SIZE) + info + bytes(64)
