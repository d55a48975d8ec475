"""Images across the two backends, with no registry: process-runtime image <-> engine image.

    to_engine(client, store, "debian")          # the store's "debian" -> engine tag "debian"
    from_engine(client, "python:3.11", store, "py311")
    pull(client, "python:3.11")                 # needs a registry; fails fast and says so

The process runtime stores files owned by shifted ids (in-image uid + 100000, see idmap.py).
`to_engine` tars the image's merged layers with GNU tar (which keeps xattrs such as file
capabilities) and shifts every owner back down in the stream, then imports the tar as a
one-layer image (`docker import`). `from_engine` exports a never-started container of the image
(a flat root filesystem) and hands it to `ImageStore.import_tar`, which shifts it up again.
"""
from __future__ import annotations

import logging
import subprocess
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tumbler.errors import InvalidRequest, RuntimeFailure
from tumbler.runtime import idmap, overlay
from tumbler.runtime.engine import IMAGE_TIMEOUT_S, engine_errors
from tumbler.runtime.images import ImageStore

log = logging.getLogger(__name__)

TAR_TIMEOUT_S = 600
CHUNK = 1 << 20


def to_engine(client, store: ImageStore, name: str, tag: str | None = None) -> str:
    """Import the store's image `name` into the engine as `tag` (default: `name`); returns tag."""
    tag = tag or name
    # The tag goes in `repo` whole: Podman's import takes `repo` with its tag and ignores `tag`
    # (an image made as python:3.11 came out untagged).
    repo = tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"
    url = client.api.base_url
    with _merged_root(store, name) as root, tempfile.TemporaryFile(dir=store.root) as tar:
        _write_unshifted_tar(root, tar)
        size_bytes = tar.tell()
        tar.seek(0)
        log.info("importing image %s (%d bytes) into the engine as %s", name, size_bytes, tag)
        with engine_errors(f"import of image {name} as {tag}", url):
            client.api.post(client.api._url("/images/create"), data=tar,
                            params={"fromSrc": "-", "repo": repo},
                            headers={"Content-Type": "application/tar"},
                            timeout=IMAGE_TIMEOUT_S).raise_for_status()
    return tag


def from_engine(client, tag: str, store: ImageStore, name: str, *, force: bool = False) -> None:
    """Export the engine's image `tag` as the store's image `name` (a flat root filesystem)."""
    url = client.api.base_url
    with engine_errors(f"export of image {tag}", url):
        client.images.get(tag)
        container = client.containers.create(tag, command=["/nonexistent"], network_mode="none",
                                             labels={"tumbler.export": name})
    try:
        with tempfile.NamedTemporaryFile(dir=store.root, suffix=".tar") as tar:
            with engine_errors(f"export of image {tag}", url):
                for chunk in container.export(chunk_size=CHUNK):
                    tar.write(chunk)
            tar.flush()
            store.import_tar(name, Path(tar.name), force=force)
    finally:
        with engine_errors(f"removing the export container of {tag}", url):
            container.remove(force=True, v=True)


def pull(client, ref: str) -> str:
    """Pull `ref` from its registry; a failure says that no registry may be reachable."""
    repo, _, version = ref.partition(":")
    try:
        with engine_errors(f"pull of {ref}", client.api.base_url):
            # The engine reports a failed pull inside a 200 reply's progress stream.
            for event in client.api.pull(repo, tag=version or "latest", stream=True, decode=True):
                if event.get("error"):
                    raise RuntimeFailure(f"pull of {ref} failed: {event['error'].strip()}")
    except RuntimeFailure as exc:
        raise RuntimeFailure(f"{exc.message}. If no registry is reachable from here, build the "
                             "image locally: `tumbler image build NAME` then "
                             "`tumbler image to-docker NAME`") from None
    return ref


@contextmanager
def _merged_root(store: ImageStore, name: str) -> Iterator[Path]:
    """The image's files as one tree: its only layer, or a read-only overlay of its layers."""
    layers = store.layers(name)
    if len(layers) == 1:
        yield layers[0]
        return
    with tempfile.TemporaryDirectory(dir=store.root, prefix=".merge-") as tmp:
        target = Path(tmp)
        _mount_readonly(layers, target)
        try:
            yield target
        finally:
            overlay.unmount(target)


def _mount_readonly(layers: list[Path], target: Path) -> None:
    """A read-only overlay of `layers` (top first): whiteouts applied, nothing writable."""
    opts = f"ro,lowerdir={':'.join(map(str, layers))}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeFailure(f"overlay mount of {len(layers)} layers at {target} failed: "
                             f"{proc.stderr.strip()}")


def _write_unshifted_tar(root: Path, out) -> None:
    """A tar of `root` into file `out`, every owner moved from the shifted range back to 0.."""
    cmd = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--one-file-system",
           "-C", str(root), "-cf", "-", "."]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as src, \
                tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            for member in src:
                member.uid, member.gid = _unshift(member.uid), _unshift(member.gid)
                member.uname = member.gname = ""
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        rc = proc.wait(timeout=TAR_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeFailure(f"tar of {root} ran past {TAR_TIMEOUT_S} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if rc not in (0, 1):  # 1: a file changed while read, which a resting image does not do
        raise RuntimeFailure(f"tar of {root} failed (exit {rc}): {proc.stderr.read().decode()[-500:]}")


def _unshift(host_id: int) -> int:
    if not idmap.HOST_BASE <= host_id < idmap.HOST_BASE + idmap.SIZE:
        raise InvalidRequest(f"image file owned by host id {host_id}, outside the sandbox range "
                             f"{idmap.HOST_BASE}..{idmap.HOST_BASE + idmap.SIZE - 1}; was it built "
                             "by `tumbler image build` or `import`?")
    return host_id - idmap.HOST_BASE
