"""The ids of a user-namespaced container's layer, put at container ids for a commit and back
(runtime/container_layers.py), on a layer made by hand: no engine needed."""
from __future__ import annotations

import os
import stat
import struct

import pytest

from tumbler.runtime.container_layers import IdRange, container_ids, layer_dir, move_to_disk
from tumbler.errors import RuntimeFailure

BASE = 3000000  # the container's root on the host
CAPS = "security.capability"


def owner(path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def test_ids_go_to_the_container_range_and_back(tmp_path):
    upper = tmp_path / "diff"
    (upper / "tmp").mkdir(parents=True)
    tool = upper / "tmp" / "tool"
    tool.write_text("x")
    os.link(tool, upper / "tmp" / "tool-link")          # one inode, two names
    os.symlink("tool", upper / "tmp" / "sym")
    os.mknod(upper / "tmp" / "gone", stat.S_IFCHR)      # a whiteout, made by overlayfs as host root
    for path in (upper, upper / "tmp", tool):
        os.chown(path, BASE, BASE)
    os.chown(upper / "tmp" / "sym", BASE + 1234, BASE + 50, follow_symlinks=False)
    os.chmod(tool, 0o4755)
    # cap_net_raw stored by the container's root (v3, root id = its host uid)
    v3 = struct.pack("<6I", 0x03000001, 1 << 13, 0, 0, 0, BASE)
    os.setxattr(tool, CAPS, v3)
    ranges = [IdRange.parse(f"0:{BASE}:65536")]

    with container_ids(upper, ranges, ranges) as changed:
        assert changed == 4
        assert owner(upper) == owner(tool) == (0, 0)
        assert owner(upper / "tmp" / "sym") == (1234, 50)
        assert owner(upper / "tmp" / "gone") == (0, 0)
        assert stat.S_IMODE(os.stat(tool).st_mode) == 0o4755   # chown cleared it; put back
        assert os.getxattr(tool, CAPS) == struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)

    assert owner(upper) == owner(tool) == (BASE, BASE)
    assert owner(upper / "tmp" / "sym") == (BASE + 1234, BASE + 50)
    assert owner(upper / "tmp" / "gone") == (0, 0)
    assert stat.S_IMODE(os.stat(tool).st_mode) == 0o4755
    assert os.getxattr(tool, CAPS) == v3


def test_ids_come_back_when_the_commit_fails(tmp_path):
    (tmp_path / "f").write_text("x")
    os.chown(tmp_path / "f", BASE + 7, BASE + 7)
    with pytest.raises(RuntimeError, match="commit failed"):
        with container_ids(tmp_path, [IdRange(0, BASE, 65536)], [IdRange(0, BASE, 65536)]):
            raise RuntimeError("commit failed")
    assert owner(tmp_path / "f") == (BASE + 7, BASE + 7)


def test_layer_moves_to_its_disk_behind_a_symlink(tmp_path):
    layer, disk = tmp_path / "overlay" / "abc", tmp_path / "disk"
    (layer / "diff").mkdir(parents=True)
    (layer / "work").mkdir()
    (layer / "link").write_text("L")
    disk.mkdir()
    assert layer_dir(str(layer / "diff"), str(layer / "work")) == layer
    with pytest.raises(RuntimeFailure, match="not Podman's overlay storage"):
        layer_dir(str(layer / "diff"), str(tmp_path / "elsewhere" / "work"))
    move_to_disk(layer, disk)
    assert os.readlink(layer) == str(disk) and (layer / "link").read_text() == "L"
    assert sorted(p.name for p in disk.iterdir()) == ["diff", "link", "work"]
    move_to_disk(layer, disk)  # again: nothing to do
    assert not (tmp_path / "overlay" / "abc.tumbler-moved").exists()
