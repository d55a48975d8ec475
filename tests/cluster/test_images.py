"""Images across nodes (cluster/images.py): a node whose store lacks an image gets the layers it
lacks from the server's store, content-addressed (sha256 of each layer's tar), checked on the
node before they are unpacked, and copied once (the node keeps the digest, the server
remembers); an image of that name with other contents on the node is refused, naming it.

The nodes of the local cluster share this machine: each gets a store of its own
(`ClusterConfig.home` with `{name}`), and the server's store is the test's own."""
from __future__ import annotations

import asyncio
import io
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

import ray  # noqa: E402

from checks import IMAGE  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from tumbler import ops  # noqa: E402
from tumbler.cluster import ClusterConfig  # noqa: E402
from tumbler.cluster import images  # noqa: E402
from tumbler.cluster.placement import Budget  # noqa: E402
from tumbler.cluster.runtime import ClusterRuntime  # noqa: E402
from tumbler.config import Paths  # noqa: E402
from tumbler.errors import Conflict, RuntimeFailure  # noqa: E402
from tumbler.runtime.idmap import HOST_BASE  # noqa: E402
from tumbler.runtime.images import ImageStore  # noqa: E402
from tumbler.runtime.spec import Limits, SandboxSpec  # noqa: E402

A = f"i{os.getpid()}"
BUDGET = Budget(2 << 30, 1 << 16, 64.0)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _import(store: ImageStore, name: str, files: dict[str, bytes], tmp_path) -> None:
    path = tmp_path / f"{name}-{time.monotonic_ns()}.tar"
    path.write_bytes(_tar(files))
    store.import_tar(name, path)


def _runtime(tmp_path) -> tuple[ClusterRuntime, ImageStore, str]:
    # A sandbox's root (a shifted uid) must reach its rootfs under the node's home, as it
    # does under /var/lib/tumbler: pytest makes its temporary dirs 0700.
    for path in (tmp_path, *tmp_path.parents):
        if path == Path("/tmp") or path == path.parent:
            break
        path.chmod(path.stat().st_mode | 0o111)
    config = ClusterConfig(home=str(tmp_path / "nodes" / "{name}"), namespace=f"images-{os.getpid()}")
    rt = ClusterRuntime(BUDGET, config=config)
    rt.store = ImageStore(Paths(home=tmp_path / "head", run=tmp_path / "head-run"))
    [node] = rt.nodes()
    return rt, ImageStore(Paths(home=tmp_path / "nodes" / A, run=tmp_path / "unused")), node["host_id"]


def test_layers_are_copied_once_verified_and_refused_when_they_differ(tmp_path):
    with local_cluster([A]):
        rt, node_store, host = _runtime(tmp_path)
        try:
            head = rt.store
            _import(head, "tiny", {"etc/hello": b"from the head\n"}, tmp_path)
            assert not node_store.exists("tiny")
            rt._ensure_image(host, "tiny")
            assert [c["image"] for c in rt.image_copies] == ["tiny"]
            assert node_store.meta("tiny")["digest"] == head.meta("tiny")["digest"]
            copied = node_store.get("tiny").layer / "etc" / "hello"
            assert copied.read_bytes() == b"from the head\n"
            assert copied.stat().st_uid == HOST_BASE       # the shifted ids, as they were
            rt._ensure_image(host, "tiny")                # the server remembers: no call at all
            rt.node_images.clear()
            rt._ensure_image(host, "tiny")                # the node has it by digest: no copy
            assert len(rt.image_copies) == 1

            # a snapshot's layer on top: only that layer moves, whiteouts and opaque dirs kept
            upper = tmp_path / "upper"
            (upper / "gone").parent.mkdir(parents=True)
            os.mknod(upper / "gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))   # overlay whiteout
            (upper / "fresh").mkdir()
            os.setxattr(upper / "fresh", "trusted.overlay.opaque", b"y")
            (upper / "fresh" / "f").write_bytes(b"top\n")
            head.add_layer("tiny-top", "tiny", upper, source="test",
                           copy=lambda src, dest: os.system(f"cp -a {src} {dest}"))
            rt._ensure_image(host, "tiny-top")
            assert [c["image"] for c in rt.image_copies] == ["tiny", "tiny-top"]
            top = node_store.get("tiny-top")
            assert top.parent == "tiny"
            assert stat.S_ISCHR((top.layer / "gone").lstat().st_mode)
            assert os.getxattr(top.layer / "fresh", "trusted.overlay.opaque") == b"y"
            assert (top.layer / "fresh" / "f").read_bytes() == b"top\n"

            # what arrives damaged is not kept
            actor = rt.client.host(host).actor
            transfer = ray.get(actor.image_begin.remote(10))
            ray.get(actor.image_part.remote(transfer, 0, b"not a tar!"))
            with pytest.raises(RuntimeFailure, match="arrived damaged: its sha256 is sha256:"):
                try:
                    ray.get(actor.image_finish.remote(transfer, "bad", None, "sha256:" + "0" * 64, "t"))
                except ray.exceptions.RayTaskError as exc:
                    raise exc.cause from None
            assert not node_store.exists("bad") and not list(node_store.root.glob(".recv-*"))

            # the node's own image of that name, with other files: refused, naming the node
            _import(head, "mine", {"a": b"head's\n"}, tmp_path)
            _import(node_store, "mine", {"a": b"the node's own\n"}, tmp_path)
            with pytest.raises(Conflict, match=rf"image 'mine' on node host {host} is not this "
                                               r"server's \(digest sha256:"):
                rt._ensure_image(host, "mine")
            assert node_store.get("mine").layer.joinpath("a").read_bytes() == b"the node's own\n"
        finally:
            rt.close()
            reap_zombies()


@pytest.mark.slow
def test_a_sandbox_on_a_node_without_the_image(tmp_path):
    """The test image (~280 MB) copied from the server's store to a node whose store is empty,
    then a sandbox made of it there; the next sandbox costs no copy."""
    with local_cluster([A]):
        rt, node_store, host = _runtime(tmp_path)
        rt.store = ImageStore()                           # the server's real store, IMAGE in it
        try:
            spec = SandboxSpec(image=IMAGE, limits=Limits(memory=128 << 20))
            made = [rt.create(spec) for _ in range(2)]
            assert [c["image"] for c in rt.image_copies] == [n for n, _ in images.chain(rt.store, IMAGE)]
            assert node_store.meta(IMAGE)["digest"] == rt.store.meta(IMAGE)["digest"]
            for info in made:
                rt.start(info.id)
            op = ops.run("cat /etc/os-release | head -1", timeout=30)
            reply = op.parse(*asyncio.run(rt.agent_client(made[0].id).call(
                op.name, op.args, op.body, timeout=op.timeout)))
            assert "Debian" in reply.output, reply.output
            for info in made:
                rt.remove(info.id)
        finally:
            rt.close()
            reap_zombies()
