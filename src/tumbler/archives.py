"""Unpacking a tar that came out of a sandbox, on the host, as hostile input.

    extract_tar(data, Path("out"), max_bytes=1 << 30, max_entries=100_000, links=False)

Whatever a sandbox sends may be built by root inside, or by an agent it took over, to attack the
host. So this routine does not use `tarfile`'s extraction or its filters (CVE-2025-4517 let a
`filter="data"` extraction write outside the destination on Python 3.11.7): `tarfile` only
parses headers, and everything else is ours:

- plain tar only: no decompression, so a small body cannot become a huge file;
- regular files and directories; symlinks and hard links only when `links=True`, and only when
  their target stays inside the destination (checked on the names, lexically);
  no devices, fifos, sparse members;
- names checked lexically: relative, no `..`, no NUL, bounded length;
- every file is opened beneath the destination one component at a time with `O_NOFOLLOW`
  (`openat` on directory fds), so no symlink, planted before or during the unpack, can lead out;
- caps on total bytes and on entries, checked for the whole archive before anything is written;
- no set-uid/set-gid/sticky bits, no owners: files belong to whoever unpacks them.
"""
from __future__ import annotations

import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tumbler.errors import InvalidRequest, TooLarge

MAX_NAME = 4096          # bytes in a member's name
MAX_COMPONENT = 255      # bytes in one component of it (NAME_MAX)
MAX_HOPS = 40            # symlinks followed while checking one link's target (as the kernel)
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_MAX_ENTRIES = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


def tar_directory(directory: Path) -> bytes:
    """A plain tar of a host directory's contents (names relative to it), for an upload."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buf.getvalue()


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]       # the checked name, split
    member: tarfile.TarInfo


def extract_tar(data: bytes, dest: Path, *, max_bytes: int = DEFAULT_MAX_BYTES,
                max_entries: int = DEFAULT_MAX_ENTRIES, links: bool = False) -> int:
    """Unpack the plain tar `data` under `dest` (made if missing); return the number of entries.

    Raises InvalidRequest, before writing anything, for an archive that is not a plain tar or
    holds a member this routine refuses (naming it), and TooLarge when it is over a cap.
    """
    entries = _check(data, max_bytes, max_entries, links)
    dest.mkdir(parents=True, exist_ok=True)
    root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)   # the caller's own path
    try:
        _write(data, entries, root)
    finally:
        os.close(root)
    return len(entries)


def _check(data: bytes, max_bytes: int, max_entries: int, links: bool) -> list[_Entry]:
    entries: list[_Entry] = []
    total = 0
    try:
        # "r:" is uncompressed only: a compressed body is refused, never inflated.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            while (member := tar.next()) is not None:
                if len(entries) >= max_entries:
                    raise TooLarge(f"the archive holds more than {max_entries} entries")
                entry = _checked(member, links)
                if entry is None:
                    continue
                if member.isreg():
                    total += member.size
                    if member.offset_data + member.size > len(data):
                        raise InvalidRequest(f"tar member {member.name!r} is cut short")
                if total > max_bytes:
                    raise TooLarge(f"the archive unpacks to more than {max_bytes} bytes")
                entries.append(entry)
    except tarfile.TarError as e:
        raise InvalidRequest(f"not a plain (uncompressed) tar archive: {e}") from None
    symlinks = {e.parts: e.member.linkname for e in entries if e.member.issym()}
    for e in entries:
        if e.member.issym():   # again, now that every link of the archive is known
            _link_target_parts(e.member, e.parts, symlinks)
    return entries


def _checked(member: tarfile.TarInfo, links: bool) -> _Entry | None:
    """The member's entry, None for the archive's own root ("."), or InvalidRequest."""
    parts = _name_parts(member.name)
    if not parts:
        if member.isdir():
            return None
        raise InvalidRequest(f"tar member {member.name!r} has an empty name")
    if member.isreg():
        if member.sparse is not None:
            raise InvalidRequest(f"tar member {member.name!r} is a sparse file; refused")
    elif member.issym() or member.islnk():
        if not links:
            raise InvalidRequest(f"tar member {member.name!r} is a link; links are refused "
                                 "unless asked for (links=True)")
        _link_target_parts(member, parts)
    elif not member.isdir():
        raise InvalidRequest(f"tar member {member.name!r} is a device, fifo or other special "
                             "file; only files, directories and links are unpacked")
    return _Entry(parts, member)


def _name_parts(name: str) -> tuple[str, ...]:
    if "\0" in name or len(name.encode(errors="surrogateescape")) > MAX_NAME:
        raise InvalidRequest(f"tar member name {name[:80]!r} has a NUL or is too long")
    if name.startswith("/"):
        raise InvalidRequest(f"tar member {name!r} has an absolute name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    for part in parts:
        if part == "..":
            raise InvalidRequest(f"tar member {name!r} leads out of the destination ('..')")
        if len(part.encode(errors="surrogateescape")) > MAX_COMPONENT:
            raise InvalidRequest(f"tar member {name!r} has a component over {MAX_COMPONENT} bytes")
    return parts


def _link_target_parts(member: tarfile.TarInfo, parts: tuple[str, ...],
                       symlinks: dict[tuple[str, ...], str] | None = None) -> tuple[str, ...]:
    """A link's target as parts from the destination; InvalidRequest if it leads out.

    The walk follows the archive's own symlinks (`symlinks`, name parts -> target) the way the
    kernel would, so a chain of links that each look harmless cannot add up to a way out.
    """
    target = member.linkname
    if not target or "\0" in target or target.startswith("/"):
        raise InvalidRequest(f"tar member {member.name!r} links to {target!r}, outside the destination")
    # A symlink's target is relative to its own directory; a hard link's to the archive root.
    start = list(parts[:-1]) if member.issym() else []
    hops = [0]
    resolved = _walk(start, target, symlinks or {}, hops)
    if resolved is None:
        raise InvalidRequest(f"tar member {member.name!r} links to {target!r}, outside the destination")
    return tuple(resolved)


def _walk(stack: list[str], target: str, symlinks: dict[tuple[str, ...], str],
          hops: list[int]) -> list[str] | None:
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return None
            stack.pop()
            continue
        stack.append(part)
        inner = symlinks.get(tuple(stack))
        if inner is not None:
            hops[0] += 1
            if hops[0] > MAX_HOPS or inner.startswith("/"):
                return None
            stack.pop()
            resolved = _walk(stack, inner, symlinks, hops)
            if resolved is None:
                return None
            stack = resolved
    return stack


def _write(data: bytes, entries: list[_Entry], root: int) -> None:
    written: dict[tuple[str, ...], tuple[int, int]] = {}   # regular file -> (offset, size)
    dir_modes: list[tuple[tuple[str, ...], int]] = []
    for entry in entries:
        m = entry.member
        parent = _open_dirs(root, entry.parts[:-1])
        try:
            name = entry.parts[-1]
            if m.isdir():
                _mkdir_at(parent, name)
                dir_modes.append((entry.parts, m.mode))
            elif m.isreg():
                _write_file_at(parent, name, data, m.offset_data, m.size, m.mode)
                written[entry.parts] = (m.offset_data, m.size)
            elif m.issym():
                _unlink_at(parent, name)
                os.symlink(m.linkname, name, dir_fd=parent)
            else:  # a hard link: a copy of a file unpacked before it (never a link to a host file)
                source = written.get(_link_target_parts(m, entry.parts))
                if source is None:
                    raise InvalidRequest(f"tar member {m.name!r} is a hard link to {m.linkname!r}, "
                                         "which is not a file earlier in the archive")
                _write_file_at(parent, name, data, source[0], source[1], m.mode)
        finally:
            os.close(parent)
    # Directory modes last and deepest first, so a read-only directory does not stop its contents.
    for parts, mode in sorted(dir_modes, key=lambda d: -len(d[0])):
        fd = _open_dirs(root, parts)
        try:
            os.chmod(fd, stat.S_IMODE(mode) & 0o777 | 0o700)
        finally:
            os.close(fd)


def _open_dirs(root: int, parts: tuple[str, ...]) -> int:
    """An fd of the directory `parts` beneath `root`, made as needed, never through a symlink."""
    fd = os.dup(root)
    for part in parts:
        _mkdir_at(fd, part)
        try:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            os.close(fd)
            raise InvalidRequest(f"cannot unpack beneath {'/'.join(parts)!r}: {part!r} is not a "
                                 f"directory ({e.strerror})") from None
        os.close(fd)
        fd = nxt
    return fd


def _mkdir_at(dir_fd: int, name: str) -> None:
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass


def _unlink_at(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        raise InvalidRequest(f"cannot replace the directory {name!r} with a link") from None


def _write_file_at(dir_fd: int, name: str, data: bytes, offset: int, size: int, mode: int) -> None:
    try:
        fd = os.open(name, _FILE_FLAGS, stat.S_IMODE(mode) & 0o777, dir_fd=dir_fd)
    except OSError as e:
        raise InvalidRequest(f"cannot write {name!r}: {e.strerror} (a link or directory is in "
                             "its place)") from None
    try:
        view = memoryview(data)[offset:offset + size]
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
    finally:
        os.close(fd)
