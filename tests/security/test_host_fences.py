"""Host-side fences (issue 23, item 3): what a sandbox leaves on the host's disk is inert for other
host users, removal survives any tree a sandbox can make, and the agent's log stays on the
sandbox's own disk."""
from __future__ import annotations

import os
import stat

import pytest

from checks import IMAGE
from tumbler.runtime.spec import Limits, SandboxSpec
from tumbler.runtime.trees import remove_tree

pytestmark = [pytest.mark.security]

# Builds a tree `depth` levels deep with relative mkdir/chdir (so its full path passes PATH_MAX).
DEEP = "import os\nfor _ in range({depth}):\n    os.mkdir('{name}'); os.chdir('{name}')\nopen('leaf', 'w').write('x')\n"


def test_remove_tree_survives_depth_long_paths_and_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("k")
    root = tmp_path / "tree"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(2000):   # 2000 x 201 bytes: far past PATH_MAX, past the recursion limit
            os.mkdir("d" * 200, dir_fd=fd)
            os.symlink(str(outside), "link", dir_fd=fd)
            nxt = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    assert remove_tree(root) is True
    assert not root.exists()
    assert (outside / "keep").read_text() == "k"    # links were removed, never followed


def test_remove_tree_reports_what_it_cannot_remove(tmp_path):
    assert remove_tree(tmp_path / "missing") is True
    with pytest.raises(OSError):
        remove_tree("/proc/self", ignore_errors=False)
    assert remove_tree("/proc/self") is False       # logged, not raised: a sweep goes on


def test_snapshot_of_a_very_deep_tree_then_more_snapshots(make_sandbox, runtime):
    """A 1,500-level tree made snapshots raise RecursionError, and the leftover `.build-*`
    directory broke every later snapshot, build and import."""
    sb = make_sandbox()
    r = sb.exec(["python3", "-c", DEEP.format(depth=1500, name="d")], cwd="/root", timeout=120)
    assert r.exit_code == 0, r.stderr
    names = []
    try:
        for i in range(2):
            names.append(sb.snapshot(f"deep-snap-{sb.id}-{i}"))
        assert not [p for p in runtime.images.root.iterdir() if p.name.startswith(".build-")]
        child = make_sandbox(spec=SandboxSpec(image=names[-1]))
        assert child.run("cd /root && find . -name leaf | wc -l").output.strip() == "1"
        child.remove()
    finally:
        for name in names:
            runtime.images.remove(name)


def test_sandbox_mounts_are_nosuid_nodev_and_the_sandboxes_dir_is_closed(make_sandbox, runtime):
    """A set-uid bash planted by sandbox A let host user nobody become uid 100000."""
    sb = make_sandbox()
    sb.run("cp /bin/bash /root/rootbash && chmod 4755 /root/rootbash")
    sdir = runtime.paths.sandboxes / sb.id
    with open("/proc/self/mountinfo") as fh:
        mounts = {line.split()[4]: line.split()[5].split(",") for line in fh if sb.id in line}
    assert {"nosuid", "nodev"} <= set(mounts[str(sdir / "layer")]), mounts
    # the merged root is mounted nosuid too, but only until runc has started the sandbox: then
    # it is in the sandbox's own mount namespace alone (the host's mount table stays small)
    assert str(sdir / "rootfs") not in mounts and not any((sdir / "rootfs").iterdir())
    with open(f"/proc/{runtime.init_pid(sb.id)}/mountinfo") as fh:
        root = next(line.split() for line in fh if line.split()[4] == "/")
    assert {"nosuid", "nodev"} <= set(root[5].split(",")), root
    planted = sdir / "layer" / "upper" / "root" / "rootbash"
    assert planted.stat().st_mode & stat.S_ISUID      # the bit is there, and inert:
    assert os.statvfs(planted).f_flag & os.ST_NOSUID
    for d in (runtime.paths.sandboxes, sdir):
        assert stat.S_IMODE(d.stat().st_mode) & 0o066 == 0, f"{d} is open to other host users"


def test_agent_stderr_is_written_on_the_sandbox_disk(make_sandbox, runtime):
    """The agent's stderr was agent.log on the host's disk: 200 MiB from a 64 MiB-disk sandbox."""
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(disk="64m")))
    sb.exec("dd if=/dev/zero of=/proc/1/fd/2 bs=1M count=200", timeout=60)
    sdir = runtime.paths.sandboxes / sb.id
    assert not (sdir / "agent.log").exists()
    held = sum(p.stat().st_blocks * 512 for p in sdir.iterdir() if p.is_file() and p.name != "disk.img")
    assert held < 1 << 20, f"{held} bytes on the host's disk outside the sandbox's own"
    assert os.stat(sdir / "disk.img").st_blocks * 512 <= 66 << 20
    assert sb.run("echo alive").output == "alive\n"
