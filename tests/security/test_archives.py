"""The host unpacks a sandbox's tar as hostile input (tumbler.archives): each attack is refused
and nothing is written outside the destination, on any Python version."""
from __future__ import annotations

import io
import lzma
import os
import tarfile

import pytest

from tumbler.archives import extract_tar, tar_directory
from tumbler.errors import InvalidRequest, TooLarge


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _entry(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    if kind == tarfile.DIRTYPE:
        info.mode = 0o755
    return info, None


@pytest.fixture
def place(tmp_path):
    """(dest, outside): unpack into dest; outside is a sibling that must stay empty."""
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    yield dest, outside
    assert list(outside.iterdir()) == [], "something was written outside the destination"


def test_round_trip_keeps_files_dirs_and_modes(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_bytes(b"hello")
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    (src / "empty").mkdir()
    assert extract_tar(tar_directory(src), tmp_path / "out") == 5
    assert (tmp_path / "out/a/b/f.txt").read_bytes() == b"hello"
    assert (tmp_path / "out/run.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "out/empty").is_dir()


@pytest.mark.parametrize("name", ["/etc/cron.d/x", "../x", "a/../../x", "a/b/../../../x"])
def test_names_that_lead_out_are_refused(place, name):
    dest, outside = place
    with pytest.raises(InvalidRequest, match="absolute|out of"):
        extract_tar(_tar(_file(name)), dest)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_links_are_refused_unless_asked_for(place):
    dest, outside = place
    with pytest.raises(InvalidRequest, match="links=True"):
        extract_tar(_tar(_entry("l", tarfile.SYMTYPE, "f"), _file("f")), dest)
    assert not dest.exists()   # checked whole before a byte is written


@pytest.mark.parametrize("target", [str("/etc"), "../outside", "a/../../outside", "../../../../etc"])
def test_symlinks_out_are_refused_even_when_links_are_asked_for(place, target):
    dest, outside = place
    with pytest.raises(InvalidRequest, match="outside the destination"):
        extract_tar(_tar(_entry("l", tarfile.SYMTYPE, target)), dest, links=True)


def test_a_chain_of_harmless_looking_symlinks_cannot_lead_out(place):
    """Each link alone stays inside; followed in turn they lead to the parent."""
    dest, outside = place
    archive = _tar(_entry("d", tarfile.DIRTYPE), _entry("d/up", tarfile.SYMTYPE, ".."),
                   _entry("esc", tarfile.SYMTYPE, "d/up/../outside"))
    with pytest.raises(InvalidRequest, match="esc"):
        extract_tar(archive, dest, links=True)


def test_cve_2025_4517_shape_is_refused(place):
    """The PATH_MAX overflow that let `filter="data"` write outside on Python 3.11.7: deep
    directories of long names, short symlinks to each, and a link through them all."""
    dest, outside = place
    members, path, comp, steps = [], "", "d" * 247, "abcdefghijklmnop"
    for step in steps:
        members.append(_entry(os.path.join(path, comp), tarfile.DIRTYPE))
        members.append(_entry(os.path.join(path, step), tarfile.SYMTYPE, comp))
        path = os.path.join(path, comp)
    link = os.path.join(*steps, "l" * 254)
    members.append(_entry(link, tarfile.SYMTYPE, "../" * len(steps)))
    members.append(_entry("escape", tarfile.SYMTYPE, link + "/../outside"))
    members.append(_file("escape/pwned", b"owned"))
    for links in (False, True):
        with pytest.raises(InvalidRequest):
            extract_tar(_tar(*members), dest, links=links)


def test_a_file_through_a_symlink_in_the_destination_is_not_followed(place):
    dest, outside = place
    dest.mkdir()
    (dest / "evil").symlink_to(outside)
    (dest / "f").symlink_to(outside / "f")
    with pytest.raises(InvalidRequest):
        extract_tar(_tar(_file("evil/x")), dest)
    with pytest.raises(InvalidRequest):
        extract_tar(_tar(_file("f")), dest)


def test_hard_links_are_copies_of_earlier_members_only(place):
    dest, outside = place
    (outside / "secret").write_bytes(b"s")
    try:
        with pytest.raises(InvalidRequest):
            extract_tar(_tar(_entry("h", tarfile.LNKTYPE, "../outside/secret")), dest, links=True)
        with pytest.raises(InvalidRequest, match="not a file earlier"):
            extract_tar(_tar(_entry("h", tarfile.LNKTYPE, "etc/passwd")), dest, links=True)
        extract_tar(_tar(_file("a", b"data"), _entry("h", tarfile.LNKTYPE, "a")), dest, links=True)
        assert (dest / "h").read_bytes() == b"data"
        assert os.stat(dest / "h").st_nlink == 1    # a copy, not a link
    finally:
        (outside / "secret").unlink()


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_fifos_are_refused(place, kind):
    dest, outside = place
    with pytest.raises(InvalidRequest, match="special"):
        extract_tar(_tar(_entry("dev", kind)), dest, links=True)


def test_setuid_bits_are_dropped(tmp_path):
    extract_tar(_tar(_file("s", b"x", 0o6755)), tmp_path / "o")
    assert (tmp_path / "o/s").stat().st_mode & 0o7777 == 0o755


def test_compressed_archives_are_refused_not_inflated(place):
    """A 155 KiB xz body became a 1 GiB file on the host when compression was auto-detected."""
    dest, outside = place
    big = _tar(_file("zeros", bytes(8 << 20)))
    with pytest.raises(InvalidRequest, match="plain"):
        extract_tar(lzma.compress(big), dest)
    assert not (dest / "zeros").exists()


def test_caps_on_bytes_and_entries(place):
    dest, outside = place
    with pytest.raises(TooLarge, match="bytes"):
        extract_tar(_tar(_file("a", bytes(1000)), _file("b", bytes(1000))), dest, max_bytes=1500)
    with pytest.raises(TooLarge, match="entries"):
        extract_tar(_tar(*[_file(f"f{i}") for i in range(11)]), dest, max_entries=10)
    assert not dest.exists()


def test_a_truncated_archive_is_refused(place):
    dest, outside = place
    whole = _tar(_file("a", bytes(4096)))
    with pytest.raises(InvalidRequest):
        extract_tar(whole[:1024], dest)
