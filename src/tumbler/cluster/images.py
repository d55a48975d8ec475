"""Images across the nodes of a cluster: content-addressed copies from the server's image store
to the stores of the node hosts that need them.

An image is a chain of layers (a base root filesystem, then each snapshot's upper dir). A
layer's **digest** is the sha256 of its tar (`pack`: names sorted, numeric owners, the
overlay's xattrs and whiteouts kept, no access or change times), computed once and kept in the
image's meta.json. Before a sandbox is made on a node, the server's ClusterRuntime compares
the chain's digests with the node's (`NodeHost.image_digests`) and sends what the node lacks,
base first, in parts (`NodeHost.image_begin`, `image_part`, `image_finish`); the node checks
the sha256 of what it received against the digest before it unpacks it into its store, and
keeps the digest, so the next sandbox of that image there costs nothing (the server also
remembers what each host has). An image of that name on the node with another digest is
refused, naming the node and both digests: a layer on top of another base would be wrong.

Only the layers' files move: the ids in them are already shifted (idmap.py), and unpacking
keeps them as they are.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from tumbler.errors import AlreadyExists, RuntimeFailure
from tumbler.runtime.images import ImageStore, check_name
from tumbler.runtime.liveness import pid_alive

PART_BYTES = 8 << 20           # one image_part call
TAR_TIMEOUT_S = 1800
RECEIVING = ".recv-"           # a layer being received: its file in the node's store dir
PACKING = ".pack-"             # a layer being packed for a copy: its dir in the server's store


def _tar_create(layer: Path) -> list[str]:
    return ["tar", "--sort=name", "--numeric-owner", "--xattrs", "--xattrs-include=*",
            "--format=posix", "--pax-option=delete=atime,delete=ctime", "-C", str(layer),
            "-cf", "-", "."]


def chain(store: ImageStore, name: str) -> list[tuple[str, str | None]]:
    """The image's layers as (name, parent), base first."""
    out: list[tuple[str, str | None]] = []
    image = store.get(name)
    while image is not None:
        if any(n == image.name for n, _ in out):
            raise RuntimeFailure(f"image {name!r} has a parent cycle at {image.name!r}")
        out.append((image.name, image.parent))
        image = store.get(image.parent) if image.parent else None
    return out[::-1]


def digest(store: ImageStore, name: str) -> str:
    """The sha256 of the layer's tar ("sha256:<hex>"), from meta.json or computed (and kept)."""
    known = store.meta(name).get("digest")
    return known if known else pack(store, name, None)


def pack(store: ImageStore, name: str, out: Path | None) -> str:
    """The layer's tar into `out` (None: only hashed) -> its digest, which meta.json keeps."""
    sha = hashlib.sha256()
    proc = subprocess.Popen(_tar_create(store.get(name).layer), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    with open(out, "wb") if out is not None else open(os.devnull, "wb") as fh:
        while chunk := proc.stdout.read(1 << 20):
            sha.update(chunk)
            fh.write(chunk)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait(TAR_TIMEOUT_S) != 0:
        raise RuntimeFailure(f"packing image {name!r} failed: {err.strip()[-500:]}")
    found = f"sha256:{sha.hexdigest()}"
    store.update_meta(name, digest=found)
    return found


def digests(store: ImageStore, names: list[str]) -> dict[str, str | None]:
    """Each name -> the digest of that image in `store` (computed if not kept), None if absent."""
    return {n: digest(store, n) if store.exists(n) else None for n in names}


def receiving(store: ImageStore) -> Path:
    """A new file in the store's directory for a layer being received (named by this process,
    so that a host sweeping the leftovers of dead ones leaves a live one's alone)."""
    return store.root / f"{RECEIVING}{os.getpid()}-{secrets.token_hex(6)}.tar"


def packing_prefix() -> str:
    """The prefix of this process's packing dirs in the server's store."""
    return f"{PACKING}{os.getpid()}-"


def _dead_owner(path: Path, prefix: str) -> bool:
    pid = path.name[len(prefix):].partition("-")[0]
    return pid.isdigit() and not pid_alive(int(pid))


def sweep_received(store: ImageStore) -> None:
    """Remove the files of layers that node hosts which died were receiving."""
    for path in store.root.glob(f"{RECEIVING}*"):
        if _dead_owner(path, RECEIVING):
            path.unlink(missing_ok=True)


def sweep_packing(store: ImageStore) -> None:
    """Remove what servers which died were packing to copy."""
    for path in store.root.glob(f"{PACKING}*"):
        if _dead_owner(path, PACKING):
            shutil.rmtree(path, ignore_errors=True)


def unpack(store: ImageStore, name: str, parent: str | None, tar: Path, expected: str,
           source: str) -> None:
    """Make image `name` (on `parent`) from a received layer tar, once its sha256 is `expected`."""
    check_name(name)
    sha = hashlib.sha256()
    with open(tar, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    found = f"sha256:{sha.hexdigest()}"
    if found != expected:
        raise RuntimeFailure(f"image {name!r} arrived damaged: its sha256 is {found}, the "
                             f"server's is {expected}; it was not kept")

    def extract(src: Path, dest: Path) -> None:
        dest.mkdir()
        done = subprocess.run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf",
                               str(src), "-C", str(dest)], capture_output=True, text=True,
                              timeout=TAR_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeFailure(f"unpacking image {name!r} failed: {done.stderr.strip()[-500:]}")
    try:
        store.add_layer(name, parent, tar, source=source, copy=extract)
    except AlreadyExists:   # another host sharing this store made it meanwhile: the same?
        if digest(store, name) != expected:
            raise
        return
    store.update_meta(name, digest=expected)


def free_bytes(store: ImageStore) -> int:
    return shutil.disk_usage(store.root).free
