"""The image store of the process runtime: directory root filesystems, layered.

    <home>/images/<name>/meta.json   what the image is, its parent (for snapshots)
    <home>/images/<name>/layer/      its files, owned by shifted ids (see idmap.py)

A base image's layer is a whole Debian root filesystem; a snapshot's layer is the upper dir of
an overlay (whiteouts included) stacked on its parent's layers. Every image is built in a
`.build-*` directory and renamed into place when complete, so a half-built image is never seen.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tumbler.config import Paths
from tumbler.errors import AlreadyExists, Conflict, InvalidRequest, NotFound, RuntimeFailure
from tumbler.runtime.idmap import shift_tree
from tumbler.runtime.trees import remove_tree

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
DEFAULT_IMAGE = "debian"
DEFAULT_SUITE = "bookworm"
DEFAULT_PACKAGES = ("bash", "coreutils", "procps", "python3", "git", "ca-certificates")
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    parent: str | None
    source: str
    created: float

    @property
    def layer(self) -> Path:
        return self.path / "layer"


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"bad image name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit")
    return name


class ImageStore:
    """Images on this host. Safe to use from several processes: builds take a file lock."""

    def __init__(self, paths: Paths | None = None):
        self.paths = paths or Paths.from_env()
        self.root = self.paths.images
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> Image:
        meta_path = self.root / check_name(name) / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no image {name!r}; build it with `tumbler image build {name}` "
                           "or list images with `tumbler image ls`") from None
        return Image(name=name, path=meta_path.parent, parent=meta.get("parent"),
                     source=meta.get("source", ""), created=meta.get("created", 0.0))

    def meta(self, name: str) -> dict:
        """The image's meta.json as a dict (NotFound as `get`)."""
        self.get(name)
        return json.loads((self.root / name / "meta.json").read_text())

    def update_meta(self, name: str, **fields) -> None:
        """Set fields of the image's meta.json (its source, a build's config), atomically."""
        meta = {**self.meta(name), **fields}
        path = self.root / name / "meta.json"
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(path)

    def exists(self, name: str) -> bool:
        return (self.root / check_name(name) / "meta.json").exists()

    def list(self) -> list[Image]:
        return [self.get(p.name) for p in sorted(self.root.iterdir())
                if NAME_RE.match(p.name) and (p / "meta.json").exists()]

    def layers(self, name: str) -> list[Path]:
        """The image's layer dirs, top first, as overlayfs wants its `lowerdir` list."""
        layers, seen = [], set()
        image: Image | None = self.get(name)
        while image is not None:
            if image.name in seen:
                raise RuntimeFailure(f"image {name!r} has a parent cycle at {image.name!r}")
            seen.add(image.name)
            layers.append(image.layer)
            image = self.get(image.parent) if image.parent else None
        return layers

    def build(self, name: str = DEFAULT_IMAGE, *, suite: str = DEFAULT_SUITE,
              packages: tuple[str, ...] = DEFAULT_PACKAGES, mirror: str | None = None,
              force: bool = False, on_output: Callable[[str], None] | None = None) -> Image:
        """A Debian root filesystem from mmdebstrap (minbase plus `packages`), cached by name."""
        check_name(name)
        mirror = mirror or os.environ.get("TUMBLER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
        with self._lock():
            if self.exists(name) and not force:
                return self.get(name)
            if shutil.which("mmdebstrap") is None:
                raise RuntimeFailure("mmdebstrap is not installed: `apt-get install mmdebstrap`")
            with self._staging(name) as stage:
                cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(packages)}",
                       suite, str(stage / "layer"), mirror]
                _run_streaming(cmd, on_output)
                self._finish(stage, name, source=f"mmdebstrap:{suite}:{','.join(packages)}")
        return self.get(name)

    def import_tar(self, name: str, tar_path: Path, *, force: bool = False) -> Image:
        """An image from a root filesystem tar (`docker export`, `podman export`, a tarball)."""
        check_name(name)
        if not Path(tar_path).is_file():
            raise InvalidRequest(f"no such tar file: {tar_path}")
        with self._lock():
            if self.exists(name) and not force:
                raise AlreadyExists(f"image {name!r} exists; pass force to replace it")
            with self._staging(name) as stage:
                (stage / "layer").mkdir()
                _run_streaming(["tar", "--numeric-owner", "-xpf", str(tar_path),
                                "-C", str(stage / "layer")], None)
                self._finish(stage, name, source=f"tar:{Path(tar_path).name}")
        return self.get(name)

    def add_layer(self, name: str, parent: str | None, upper: Path, *, source: str,
                  copy: Callable[[Path, Path], None]) -> Image:
        """A snapshot: `copy(upper, dest)` fills the new layer, stacked on `parent` (None: a
        base layer whose ids are already shifted, as a copy from another store's is)."""
        check_name(name)
        if parent is not None:
            self.get(parent)
        with self._lock():
            if self.exists(name):
                raise AlreadyExists(f"image {name!r} exists; pick another snapshot name")
            with self._staging(name) as stage:
                copy(upper, stage / "layer")
                self._write_meta(stage, name, parent=parent, source=source)
                os.rename(stage, self.root / name)
        return self.get(name)

    def remove(self, name: str, in_use: Callable[[str], bool] = lambda _: False) -> None:
        image = self.get(name)
        children = [i.name for i in self.list() if i.parent == name]
        if children:
            raise Conflict(f"image {name!r} is the parent of {', '.join(children)}; remove those first")
        if in_use(name):
            raise Conflict(f"image {name!r} is used by a sandbox; remove the sandbox first")
        trash = self.root / f".trash-{name}-{time.time_ns()}"
        os.rename(image.path, trash)
        remove_tree(trash)

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._sweep()
            yield

    def _sweep(self) -> None:
        """Remove leftovers of builds that were interrupted (we hold the lock: none is running)."""
        for p in self.root.iterdir():
            if p.name.startswith((".build-", ".trash-")):
                remove_tree(p)

    @contextmanager
    def _staging(self, name: str) -> Iterator[Path]:
        stage = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=self.root))
        try:
            yield stage
        finally:
            remove_tree(stage)

    def _finish(self, stage: Path, name: str, *, source: str) -> None:
        layer = stage / "layer"
        layer.chmod(0o755)
        shift_tree(layer)
        self._write_meta(stage, name, parent=None, source=source)
        final = self.root / name
        if final.exists():
            trash = self.root / f".trash-{name}-{time.time_ns()}"
            os.rename(final, trash)
            remove_tree(trash)
        os.rename(stage, final)

    @staticmethod
    def _write_meta(stage: Path, name: str, *, parent: str | None, source: str) -> None:
        meta = {"name": name, "parent": parent, "source": source, "created": time.time()}
        (stage / "meta.json").write_text(json.dumps(meta, indent=1))


def _run_streaming(cmd: list[str], on_output: Callable[[str], None] | None) -> None:
    """Run a build step, passing its output lines on; its failure names the command and tail."""
    tail: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if on_output:
                on_output(line.rstrip())
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeFailure(f"{cmd[0]} ran past {BUILD_TIMEOUT_S} s")
        rc = proc.wait(timeout=60)
    if rc != 0:
        raise RuntimeFailure(f"{' '.join(cmd[:3])}... failed with exit code {rc}:\n" + "\n".join(tail))
