"""The agent's own Python, which no sandbox can change, and the directory mounted at /.tumbler.

The in-sandbox agent used to run on the image's `/usr/bin/python3` and standard library, which
root inside can edit (code appended to `subprocess.py` ran inside the agent at its first exec),
and imported its package from `/.tumbler`, which could be renamed and rebuilt from inside. Now
one host directory, built here once per agent version, is bind-mounted read-only (nosuid, nodev)
at `/.tumbler`, so it cannot be renamed (a mountpoint) nor written:

    /.tumbler/py/bin/python3           the host's Debian CPython (the interpreter)
    /.tumbler/py/lib/ld-linux-*.so.2   its dynamic loader and the libraries it needs
    /.tumbler/py/lib/python3.11/       its standard library (tests, IDLE, Tk... left out)
    /.tumbler/agent/                   the agent package, compiled

The agent starts through the bundled loader (`AGENT_ARGV`), so it needs nothing of the image:
not a python3, not even a glibc (busybox, Alpine and distroless images work). `--library-path`
reaches only the loader, not the environment, so the programs the agent starts see the image's
own libraries. Python computes its prefix from the interpreter's path, so `sys.path` is the
mount's alone (`-I -S`: no user site, no site-packages, no PYTHON* variables).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tumbler.errors import RuntimeFailure
from tumbler.runtime.trees import remove_tree

log = logging.getLogger(__name__)

MOUNT = "/.tumbler"
SOURCE_PYTHON = Path("/usr/bin/python3.11")      # Debian's python3 (package python3-minimal)
SOURCE_STDLIB = Path("/usr/lib/python3.11")
LOADER = "ld-linux-x86-64.so.2"
# Libraries the interpreter and the stdlib modules the agent uses link to.
LIBS = ("libc.so.6", "libm.so.6", "libz.so.1", "libexpat.so.1", "libffi.so.8", "liblzma.so.5",
        "libbz2.so.1.0", "libuuid.so.1", "libgcc_s.so.1")
# Paths in our copies of the loader and libc that would read the sandbox's own files, pointed at
# our mount instead (same length, so nothing else moves). /etc/ld.so.preload is read by every
# dynamic start: root inside could write one and have its library loaded into the next agent
# (a snapshot carries it). Without the cache, a library is looked up in our lib dir only (all
# the agent needs is there); our nsswitch.conf names only the services built into libc, so no
# NSS module is ever loaded from the image.
BINARY_PATCHES = {
    LOADER: ((b"/etc/ld.so.preload\0", b"/.tumbler/py/nopre\0"),
             (b"/etc/ld.so.cache\0", b"/.tumbler/py/noc\0")),
    "libc.so.6": ((b"/etc/nsswitch.conf\0", b"/.tumbler/py/nsswc\0"),),
}
NSSWITCH = "".join(f"{db}: files\n" for db in (
    "passwd", "group", "shadow", "gshadow", "hosts", "networks", "protocols", "services",
    "ethers", "rpc", "netgroup", "aliases", "publickey", "initgroups"))
BUILD_VERSION = "2"   # bump when the build changes
LIB_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"), Path("/lib64"))
# Parts of the stdlib the agent never imports; leaving them out keeps the copy at ~30 MB.
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "distutils", "site-packages", "dist-packages", "unittest/test", "__phello__")
AGENT_ARGV = [f"{MOUNT}/py/lib/{LOADER}", "--library-path", f"{MOUNT}/py/lib",
              f"{MOUNT}/py/bin/python3", "-I", "-S"]


def ensure(root: Path, agent_dir: Path) -> Path:
    """The directory to mount at /.tumbler for this agent and interpreter, built if missing."""
    if not SOURCE_PYTHON.exists() or not SOURCE_STDLIB.is_dir():
        raise RuntimeFailure(f"the agent's interpreter comes from {SOURCE_PYTHON} (Debian's "
                             "python3.11): `apt-get install python3`")
    target = root / _key(agent_dir)
    if (target / "ready").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o711)     # sandboxes' root (uid 100000) passes through to its own mount
    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        _build(stage, agent_dir)
        (stage / "ready").touch()
        try:
            os.rename(stage, target)
        except OSError:          # another process built it first: theirs is as good
            remove_tree(stage)
    except BaseException:
        remove_tree(stage)
        raise
    _sweep_old(root, keep=target.name)
    return target


def _key(agent_dir: Path) -> str:
    h = hashlib.sha256()
    st = SOURCE_PYTHON.stat()
    h.update(f"{BUILD_VERSION}:{SOURCE_PYTHON}:{st.st_size}:{st.st_mtime_ns}".encode())
    for path in sorted(agent_dir.rglob("*.py")):
        h.update(str(path.relative_to(agent_dir)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _build(stage: Path, agent_dir: Path) -> None:
    py = stage / "py"
    (py / "bin").mkdir(parents=True)
    (py / "lib").mkdir()
    shutil.copy2(SOURCE_PYTHON, py / "bin" / "python3")
    for name in (LOADER, *LIBS):
        source = next((d / name for d in LIB_DIRS if (d / name).exists()), None)
        if source is None:
            if name in (LOADER, "libc.so.6", "libm.so.6"):
                raise RuntimeFailure(f"the agent's interpreter needs {name}, not found in "
                                     f"{', '.join(map(str, LIB_DIRS))}")
            log.info("agent runtime: %s not found; modules that need it will not load", name)
            continue
        shutil.copy2(source.resolve(), py / "lib" / name)
        if name in BINARY_PATCHES:
            _patch(py / "lib" / name, BINARY_PATCHES[name])
    (py / "nsswc").write_text(NSSWITCH)
    shutil.copytree(SOURCE_STDLIB, py / "lib" / "python3.11", symlinks=True,
                    ignore=_stdlib_ignore)
    shutil.copytree(agent_dir, stage / "agent", ignore=shutil.ignore_patterns("__pycache__"))
    (stage / "run").mkdir()   # where the docker backend mounts the sandbox's own socket dir
    # Compiled by the interpreter that will run them, so no sandbox start compiles anything.
    subprocess.run([str(SOURCE_PYTHON), "-I", "-S", "-m", "compileall", "-q", "-j", "0",
                    str(stage / "agent"), str(py / "lib" / "python3.11")],
                   check=False, capture_output=True, timeout=300)
    # Readable by root inside (host uid 100000), writable by no one but host root.
    for path in [stage, *stage.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)


def _patch(path: Path, patches) -> None:
    data = path.read_bytes()
    for old, new in patches:
        assert len(old) == len(new), (old, new)
        if old not in data:
            raise RuntimeFailure(f"cannot pin {old[:-1].decode()} in the agent's copy of {path.name} "
                                 "(an unknown glibc build?): refusing to run the agent on it")
        data = data.replace(old, new)
    path.write_bytes(data)


def _stdlib_ignore(directory: str, names: list[str]) -> set[str]:
    rel = os.path.relpath(directory, SOURCE_STDLIB)
    skip = set()
    for name in names:
        path = name if rel == "." else f"{rel}/{name}"
        if path in STDLIB_SKIP or name == "__pycache__" or (
                rel == "lib-dynload" and name.startswith(("_test", "xxlimited", "_xxtest"))):
            skip.add(name)
    return skip


def _sweep_old(root: Path, keep: str) -> None:
    """Remove what builds cut short left (`.build-*` of processes no longer running them: an
    hour old). Earlier versions stay: a running sandbox may still mount one, and a directory
    removed under a bind mount would make its later imports fail."""
    import time
    for path in root.glob(".build-*"):
        try:
            if time.time() - path.stat().st_mtime > 3600:
                remove_tree(path)
        except FileNotFoundError:
            pass


__all__ = ["AGENT_ARGV", "MOUNT", "ensure"]
