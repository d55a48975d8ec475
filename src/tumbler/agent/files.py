"""File ops: read, write, stat, list, remove, chmod, mkdir, and tar upload/download of trees.

Paths are absolute paths of the sandbox (the agent's root is the sandbox's root, so nothing
outside it is reachable). A missing path is kind "not_found"; a directory where a file is
needed (or the reverse) is kind "invalid" with a message that says which.
"""
from __future__ import annotations

import io
import os
import stat as st

from . import args as a
from .protocol import INVALID, MAX_BODY, NOT_FOUND, AgentRequestError


def read(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Bytes [offset, offset + length) of a file (to its end when length is null)."""
    path = a.absolute_path(req)
    offset = a.get(req, "offset", int, 0)
    length = a.get(req, "length", int, None)
    if offset < 0 or (length is not None and length < 0):
        raise AgentRequestError(INVALID, "offset and length must be >= 0")
    info = _stat(path)
    if st.S_ISDIR(info.st_mode):
        raise AgentRequestError(INVALID, f"{path} is a directory; use file.list or file.download_tar")
    want = max(info.st_size - offset, 0) if length is None else length
    if want > MAX_BODY:
        raise AgentRequestError(INVALID, f"{path}: {want} bytes is more than one reply carries "
                                f"({MAX_BODY} bytes); read it in parts with offset and length")
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(want) if length is not None else f.read()
    return {"size": len(data)}, data


def write(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Write (or append) the body to a file; create missing parent directories unless parents=false."""
    path = a.absolute_path(req)
    append = a.get(req, "append", bool, False)
    mode = a.get(req, "mode", int, None)
    if a.get(req, "parents", bool, True):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.isdir(path):
        raise AgentRequestError(INVALID, f"{path} is a directory; cannot write file data to it")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644 if mode is None else mode)
    with open(fd, "wb") as f:
        f.write(body)
    if mode is not None:
        os.chmod(path, mode)  # the open's mode is filtered by the umask; the caller asked for this
    return {"size": len(body)}, b""


def stat(req: dict, body: bytes) -> tuple[dict, bytes]:
    """{path, type, size (bytes), mode, uid, gid, mtime (seconds since the epoch)}; links not followed."""
    path = a.absolute_path(req)
    return _entry(path, _stat(path, follow=False)), b""


def list_dir(req: dict, body: bytes) -> tuple[dict, bytes]:
    """{"entries": [stat-shaped entry + name, ...]} sorted by name."""
    path = a.absolute_path(req)
    if not st.S_ISDIR(_stat(path).st_mode):
        raise AgentRequestError(INVALID, f"{path} is not a directory")
    entries = []
    with os.scandir(path) as it:
        for e in it:
            try:
                info = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we listed
            entries.append(dict(_entry(e.path, info), name=e.name))
    entries.sort(key=lambda e: e["name"])
    return {"entries": entries}, b""


def remove(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Remove a file, link or empty directory; a whole tree with recursive=true."""
    path = a.absolute_path(req)
    recursive = a.get(req, "recursive", bool, False)
    info = _stat(path, follow=False)
    if not st.S_ISDIR(info.st_mode):
        os.unlink(path)
    elif recursive:
        import shutil
        shutil.rmtree(path)
    else:
        try:
            os.rmdir(path)
        except OSError as e:
            if e.errno == 39:  # ENOTEMPTY
                raise AgentRequestError(INVALID, f"{path} is a directory that is not empty; "
                                        "pass recursive=true to remove it and its contents") from None
            raise
    return {}, b""


def chmod(req: dict, body: bytes) -> tuple[dict, bytes]:
    path = a.absolute_path(req)
    mode = a.get(req, "mode", int)
    _stat(path)
    os.chmod(path, mode)
    return {}, b""


def mkdir(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Create a directory (and its parents unless parents=false); an existing directory is fine."""
    path = a.absolute_path(req)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise AgentRequestError(INVALID, f"{path} exists and is not a directory")
    if a.get(req, "parents", bool, True):
        os.makedirs(path, exist_ok=True)
    elif not os.path.isdir(path):
        if not os.path.isdir(os.path.dirname(path)):
            raise AgentRequestError(NOT_FOUND, f"parent of {path} does not exist; pass parents=true")
        os.mkdir(path)
    return {}, b""


def upload_tar(req: dict, body: bytes) -> tuple[dict, bytes]:
    """Extract the tar in the body under `path` (created); members that would leave it are refused."""
    import tarfile

    path = a.absolute_path(req)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise AgentRequestError(INVALID, f"{path} exists and is not a directory")
    try:
        tar = tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
        members = tar.getmembers()
    except tarfile.TarError as e:
        raise AgentRequestError(INVALID, f"body is not a readable tar archive: {e}") from None
    with tar:
        links: set[str] = set()
        for m in members:
            _check_member(m, links)
        os.makedirs(path, exist_ok=True)
        tar.extractall(path, members=members)
    return {"members": len(members)}, b""


def download_tar(req: dict, body: bytes) -> tuple[dict, bytes]:
    """A tar of a file (one member, its base name) or of a directory's contents (relative names)."""
    import tarfile

    path = a.absolute_path(req)
    info = _stat(path)
    to = a.get(req, "to", str, None)
    if to is not None and not to.startswith("/"):
        raise AgentRequestError(INVALID, f"'to' must be an absolute path, not {to!r}")
    # With `to` the tar is written to that file (on the sandbox's own disk) instead of the
    # reply, so the host can read it out in parts and no process holds it whole.
    buf = io.BytesIO() if to is None else None
    skip = (lambda t: None if os.path.join(path, t.name) == to else t) if to else None
    with tarfile.open(fileobj=buf, mode="w") if to is None else tarfile.open(to, mode="w") as tar:
        if st.S_ISDIR(info.st_mode):
            for name in sorted(os.listdir(path)):
                if os.path.join(path, name) != to:
                    tar.add(os.path.join(path, name), arcname=name, filter=skip)
        else:
            tar.add(path, arcname=os.path.basename(path))
    if to is not None:
        return {"size": os.path.getsize(to), "to": to}, b""
    data = buf.getvalue()
    if len(data) > MAX_BODY:
        raise AgentRequestError(INVALID, f"{path}: the tar is {len(data)} bytes, more than one reply "
                                f"carries ({MAX_BODY} bytes)")
    return {"size": len(data)}, data


def _check_member(m, links: set[str]) -> None:
    """Refuse a member that names or links outside the extraction root, or is a device.

    `links` collects the archive's symlinks so far: a member under one of them is refused too,
    since the lexical check of each link target cannot see where a chain of links leads.
    """
    name = m.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith("/") or ".." in parts:
        raise AgentRequestError(INVALID, f"tar member {name!r}: absolute names and '..' are refused")
    clean = [p for p in parts if p not in ("", ".")]
    for i in range(1, len(clean)):
        if "/".join(clean[:i]) in links:
            raise AgentRequestError(INVALID, f"tar member {name!r}: lies under a symlink of the archive")
    if m.issym():
        links.add("/".join(clean))
    if m.ischr() or m.isblk():
        raise AgentRequestError(INVALID, f"tar member {name!r}: device nodes are refused")
    if m.issym():
        target = os.path.normpath(os.path.join(os.path.dirname(name), m.linkname))
        if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise AgentRequestError(INVALID, f"tar member {name!r}: symlink to {m.linkname!r} leaves "
                                    "the target directory")
    if m.islnk():
        target = os.path.normpath(m.linkname)
        if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise AgentRequestError(INVALID, f"tar member {name!r}: hard link to {m.linkname!r} leaves "
                                    "the target directory")


def _stat(path: str, follow: bool = True) -> os.stat_result:
    try:
        return os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        raise AgentRequestError(NOT_FOUND, f"{path} does not exist") from None
    except NotADirectoryError:
        raise AgentRequestError(NOT_FOUND, f"{path} does not exist (a parent is not a directory)") from None


def _entry(path: str, info: os.stat_result) -> dict:
    mode = info.st_mode
    kind = ("dir" if st.S_ISDIR(mode) else "file" if st.S_ISREG(mode)
            else "symlink" if st.S_ISLNK(mode) else "other")
    return {"path": path, "type": kind, "size": info.st_size, "mode": st.S_IMODE(mode),
            "uid": info.st_uid, "gid": info.st_gid, "mtime": info.st_mtime}
