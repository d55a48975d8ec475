"""What tests share: the image they use and the checks that a removed sandbox left nothing behind
(one per backend)."""
from __future__ import annotations

import os
import subprocess
import time

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")


def leftovers(runtime, sandbox_id: str) -> list[str]:
    """Everything a removed sandbox could have left behind on the host."""
    from tumbler.runtime import cgroups, disks
    found = []
    if (runtime.paths.sandboxes / sandbox_id).exists():
        found.append(f"directory {runtime.paths.sandboxes / sandbox_id}")
    if (runtime.paths.runc_root / f"tmb-{sandbox_id}").exists():
        found.append("runc state")
    if os.path.exists(runtime.agent_socket(sandbox_id)):
        found.append("agent socket")
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if sandbox_id in line]
    found += [f"cgroup {p}" for p in cgroups.leftover_dirs(f"tumbler/{sandbox_id}")]
    found += [f"loop device {d}" for d in disks.loop_devices_of(f"/{sandbox_id}/")]
    ps = subprocess.run(["ps", "-eo", "pid,stat,cgroup:512"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if f"tumbler/{sandbox_id}" in line]
    return found


def socket_holders(path: str) -> list[str]:
    """Who holds unix socket `path` open (pid, state, command, cgroup): for a failure that says
    a connection was taken with no one answering behind it."""
    with open("/proc/net/unix") as fh:
        inodes = {f.split()[6] for f in fh.readlines()[1:] if f.rstrip().endswith(" " + path)}
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as st, open(f"/proc/{pid}/cgroup") as cg, \
                    open(f"/proc/{pid}/cmdline") as cmd:
                about = f"{pid} {st.read().split(')')[-1].split()[0]} {cmd.read()[:120]!r} {cg.readline().strip()}"
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        if any(_link(f"/proc/{pid}/fd/{fd}")[len("socket:["):-1] in inodes for fd in fds):
            found.append(about)
    return found


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def docker_leftovers(rt, sandbox_id: str) -> list[str]:
    """What a removed sandbox of the docker backend could have left on the host (its container,
    dirs, mounts, loop device, and the engine's monitor of its container, conmon)."""
    from tumbler.runtime import disks
    found = [f"container {c['Names']}" for c in
             rt.api.containers(all=True, filters={"label": f"tumbler.sandbox={sandbox_id}"})]
    for path in (rt.records / sandbox_id, rt.shared / sandbox_id, rt.disk_dir / sandbox_id):
        if os.path.lexists(path):
            found.append(f"path {path}")
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if sandbox_id in line]
    found += [f"loop device {d}" for d in disks.loop_devices_of(f"/{sandbox_id}/")]
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if rt._name(sandbox_id) in line]
    return found


def remove_all_and_check(made, leftovers_of) -> None:
    """A fixture's teardown: remove every sandbox in `made` (one that fails to go is reported by
    the check, not here), then assert that none left anything (`leftovers_of(id)` -> list)."""
    for sb in made:
        try:
            sb.remove()
        except Exception:
            pass
    for sb in made:
        assert leftovers_of(sb.id) == []


def reap_exited_children() -> int:
    """Collect every child of this process that has exited (a zombie) -> how many. A test that
    SIGKILLs a server inherits that server's sandbox inits (the runtime makes the test process
    a child subreaper); once the next server removes such a sandbox, its init is a zombie of
    the test process until the test collects it."""
    me, reaped = os.getpid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                state, ppid = fh.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state == "Z" and int(ppid) == me:
            try:
                os.waitpid(int(entry), os.WNOHANG)
                reaped += 1
            except ChildProcessError:
                pass
    return reaped


def reap(pid: int | None, timeout_s: float = 5.0) -> None:
    """Collect the exit of `pid` if it is our child, waiting up to `timeout_s`: a sandbox init
    orphaned by a killed server or node host is reparented to this (subreaper) test process and
    would stay a zombie. No pid, or not our child: nothing to do."""
    deadline = time.monotonic() + timeout_s
    while pid and time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.01)


def busybox_tar() -> bytes:
    """An image with a static busybox and nothing else: no python3, no glibc, no bash."""
    import io
    import shutil
    import tarfile
    from pathlib import Path

    import pytest
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not Path(busybox).exists():
        pytest.skip("needs Debian's busybox-static (the Makefile installs it)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "root", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "ls", "cat", "echo", "false"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    return buf.getvalue()


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition"):
    """predicate()'s first true value, polled every 50 ms; fails the test after timeout_s."""
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.05)
