"""File ops: bytes in and out, metadata, trees as tar."""
from __future__ import annotations

import io
import tarfile

import pytest

from tumbler.agent.protocol import AgentRequestError


def kind_of(call):
    with pytest.raises(AgentRequestError) as e:
        call()
    return e.value.kind


def test_write_read_append_round_trip(agent, tmp_path):
    path = str(tmp_path / "sub" / "data.bin")
    data = bytes(range(256)) * 10
    assert agent.call("file.write", {"path": path}, data)[0] == {"size": 2560}
    assert agent.call("file.read", {"path": path})[1] == data
    agent.call("file.write", {"path": path, "append": True}, b"tail")
    assert agent.call("file.read", {"path": path, "offset": 2560})[1] == b"tail"
    assert agent.call("file.read", {"path": path, "offset": 1, "length": 2})[1] == b"\x01\x02"


def test_stat_list_chmod_mkdir_remove(agent, tmp_path):
    root = str(tmp_path)
    agent.call("file.mkdir", {"path": f"{root}/a/b"})
    agent.call("file.write", {"path": f"{root}/a/f.txt", "mode": 0o600}, b"hello")
    info = agent.call("file.stat", {"path": f"{root}/a/f.txt"})[0]
    assert (info["type"], info["size"], info["mode"]) == ("file", 5, 0o600)
    agent.call("file.chmod", {"path": f"{root}/a/f.txt", "mode": 0o755})
    assert agent.call("file.stat", {"path": f"{root}/a/f.txt"})[0]["mode"] == 0o755
    entries = agent.call("file.list", {"path": f"{root}/a"})[0]["entries"]
    assert [(e["name"], e["type"]) for e in entries] == [("b", "dir"), ("f.txt", "file")]
    assert kind_of(lambda: agent.call("file.remove", {"path": f"{root}/a"})) == "invalid"
    agent.call("file.remove", {"path": f"{root}/a", "recursive": True})
    assert kind_of(lambda: agent.call("file.stat", {"path": f"{root}/a"})) == "not_found"


def test_path_errors(agent, tmp_path):
    assert kind_of(lambda: agent.call("file.read", {"path": "relative/path"})) == "invalid"
    assert kind_of(lambda: agent.call("file.read", {"path": str(tmp_path / "missing")})) == "not_found"
    assert kind_of(lambda: agent.call("file.read", {"path": str(tmp_path)})) == "invalid"
    assert kind_of(lambda: agent.call("file.write", {"path": str(tmp_path)}, b"x")) == "invalid"
    agent.call("file.write", {"path": str(tmp_path / "plain")}, b"x")
    assert kind_of(lambda: agent.call("file.list", {"path": str(tmp_path / "plain")})) == "invalid"


def test_tar_upload_and_download_of_a_tree(agent, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("top.txt", b"top"), ("dir/inner.bin", b"\xff" * 3000)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("dir/link")
        link.type, link.linkname = tarfile.SYMTYPE, "inner.bin"
        tar.addfile(link)
    dest = str(tmp_path / "tree")
    assert agent.call("file.upload_tar", {"path": dest}, buf.getvalue())[0] == {"members": 3}
    assert agent.call("file.read", {"path": f"{dest}/dir/link"})[1] == b"\xff" * 3000
    _, body = agent.call("file.download_tar", {"path": dest})
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = sorted(tar.getnames())
        assert names == ["dir", "dir/inner.bin", "dir/link", "top.txt"]
        assert tar.extractfile("top.txt").read() == b"top"


@pytest.mark.parametrize("name,kind,linkname", [
    ("../escape.txt", tarfile.REGTYPE, ""),
    ("/abs.txt", tarfile.REGTYPE, ""),
    ("up", tarfile.SYMTYPE, "../.."),
    ("abs", tarfile.SYMTYPE, "/etc"),
    ("dev", tarfile.CHRTYPE, ""),
])
def test_tar_members_that_leave_the_target_are_refused(agent, tmp_path, name, kind, linkname):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, linkname
        tar.addfile(info)
    with pytest.raises(AgentRequestError) as e:
        agent.call("file.upload_tar", {"path": str(tmp_path / "t")}, buf.getvalue())
    assert e.value.kind == "invalid" and name in e.value.message
    assert not (tmp_path / "escape.txt").exists()


def test_tar_member_under_an_archive_symlink_is_refused(agent, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("d")
        link.type, link.linkname = tarfile.SYMTYPE, "."
        tar.addfile(link)
        tar.addfile(tarfile.TarInfo("d/x"))
    with pytest.raises(AgentRequestError) as e:
        agent.call("file.upload_tar", {"path": str(tmp_path / "t")}, buf.getvalue())
    assert e.value.kind == "invalid" and "d/x" in e.value.message
