"""Files over HTTP: exact bytes, trees, metadata; every path stays inside the sandbox."""
from __future__ import annotations

import os

import pytest

from checks import IMAGE
from tumbler import Sandbox
from tumbler.errors import InvalidRequest, NotFound


@pytest.fixture
def sb(api):
    return Sandbox(IMAGE, client=api)


def test_bytes_survive_exactly(sb):
    data = bytes(range(256)) * 1000 + b"\xff\xfe not utf-8 \x80"
    sb.write_file("/tmp/bin/blob", data, mode=0o600)
    assert sb.read_bytes("/tmp/bin/blob") == data
    assert sb.read_bytes("/tmp/bin/blob", offset=1, length=3) == b"\x01\x02\x03"
    info = sb.stat("/tmp/bin/blob")
    assert (info.type, info.size, info.mode & 0o777) == ("file", len(data), 0o600)
    sb.write_file("/tmp/bin/blob", b"tail", append=True)
    assert sb.read_bytes("/tmp/bin/blob").endswith(b"\x80tail")
    assert sb.run("printf '\\xc3\\x28'").output_bytes == b"\xc3\x28"


def test_metadata_ops(sb):
    sb.mkdir("/srv/a/b")
    sb.write_file("/srv/a/b/run.sh", "#!/bin/sh\necho ran\n")
    sb.chmod("/srv/a/b/run.sh", 0o755)
    assert sb.exec(["/srv/a/b/run.sh"]).stdout == "ran\n"
    assert [e.path.rsplit("/", 1)[-1] for e in sb.list_dir("/srv/a/b")] == ["run.sh"]
    with pytest.raises(InvalidRequest):
        sb.remove_file("/srv/a")        # a directory needs recursive=True
    sb.remove_file("/srv/a", recursive=True)
    with pytest.raises(NotFound):
        sb.stat("/srv/a")


def test_directory_upload_and_download(sb, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.bin").write_bytes(b"\x00\xff")
    os.chmod(src / "a.txt", 0o640)
    sb.upload(src, "/work/tree")
    assert sb.run("cat /work/tree/a.txt; stat -c %a /work/tree/a.txt").output == "A640\n"
    sb.run("echo new > /work/tree/sub/c.txt")
    dst = tmp_path / "dst"
    sb.download("/work/tree", dst)
    assert (dst / "sub" / "b.bin").read_bytes() == b"\x00\xff"
    assert (dst / "sub" / "c.txt").read_text() == "new\n"
    sb.upload(src / "a.txt", "/work/single.txt")
    sb.download("/work/single.txt", tmp_path / "single.txt")
    assert (tmp_path / "single.txt").read_text() == "A"


def test_paths_stay_inside_the_sandbox(sb):
    sb.write_file("/tmp/../../../../etc/tumbler-escape-test", "inside")
    # '..' climbs no further than the sandbox's root: the file is the sandbox's /etc/...
    assert sb.run("cat /etc/tumbler-escape-test").output == "inside"
    assert not os.path.exists("/etc/tumbler-escape-test")
    assert "root:" in sb.read_file("/../../etc/passwd")   # the sandbox's own passwd
    for bad in ("etc/passwd", "../etc/passwd", ""):
        with pytest.raises(InvalidRequest, match="absolute"):
            sb.read_file(bad)
    with pytest.raises(InvalidRequest, match="absolute"):
        sb.write_file("relative.txt", "x")
    with pytest.raises(InvalidRequest, match="absolute"):
        sb.chmod("x", 0o644)


def test_a_large_directory_download_streams_and_leaves_no_scratch(sb, tmp_path):
    """Tars are written on the sandbox's disk and read out in 4 MiB parts (issue 23): a tar of
    several parts arrives whole and exact, and the scratch file is gone after."""
    sb.run("mkdir -p /root/big && head -c 9437184 /dev/urandom > /root/big/blob && sha256sum /root/big/blob > /root/sum")
    sb.download("/root/big", tmp_path / "big")
    import hashlib
    assert hashlib.sha256((tmp_path / "big" / "blob").read_bytes()).hexdigest() == \
        sb.read_file("/root/sum").split()[0]
    assert sb.run("ls -a / | grep -c tumbler-download || true").output.strip() == "0"
