"""The escape suite's system-call attempts and jail checks against the docker backend (Podman's
Docker-API service here): the same probe as test_escapes.py, in a container made by
DockerRuntime with its defaults (our seccomp profile, a user namespace of its own, its own
disk); then root's host uid and the disk-fill attempts. Skipped where no engine runs.
What holds and what does not is in docs/SECURITY.md ("Docker backend").
"""
from __future__ import annotations

import json
import os
import platform
import socket

import pytest

from checks import IMAGE
from escape_probes import CONNECT, PROBE
from test_escapes import ATTEMPTS, FORBIDDEN_CAPS

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="probes use x86_64 syscall numbers"),
]

CGROUP_V1_WRITES = r'''
import errno, glob, json, os
out = {}
for p in glob.glob("/sys/fs/cgroup/*/release_agent") + glob.glob("/sys/fs/cgroup/*/notify_on_release") \
        + glob.glob("/sys/fs/cgroup/release_agent") + glob.glob("/sys/fs/cgroup/*/cgroup.procs"):
    try:
        os.close(os.open(p, os.O_WRONLY))
        out[p] = "opened"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def docker_rt():
    from test_backends import _docker_runtime
    return _docker_runtime()


@pytest.fixture(scope="module")
def docker_sandbox(docker_rt):
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(runtime=docker_rt, image=IMAGE)
    yield sb
    sb.remove()


@pytest.fixture(scope="module")
def docker_probe(docker_sandbox):
    st = os.stat("/")
    host = {"host_pid": os.getpid(), "disk_major": os.major(st.st_dev),
            "disk_minor": os.minor(st.st_dev)}
    r = docker_sandbox.exec(["python3", "-c", PROBE, json.dumps(host)], timeout=60)
    assert r.exit_code == 0, r.stderr
    return json.loads(max(r.stdout.splitlines(), key=len))


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_attempt_is_blocked_docker(docker_probe, name):
    blocked, meaning = ATTEMPTS[name]
    if name not in docker_probe:
        pytest.skip(f"{name}: nothing to try on this kernel")
    assert docker_probe[name] in blocked, f"{name} ({meaning}) gave {docker_probe[name]}"


def test_jail_facts_docker(docker_probe):
    f = docker_probe["facts"]
    assert f["no_new_privs"] == "1"
    assert f["seccomp"] == "2"
    held = {n for n, bit in FORBIDDEN_CAPS.items() if (f["cap_eff"] | f["cap_bnd"]) >> bit & 1}
    assert not held, held
    assert f["block_devices"] == []
    assert f["net_devices"] == ["lo"] and f["routes"] == []
    for path, text in f["masked"].items():        # the engine's masked paths
        assert text == "" or text.startswith("error:"), (path, text[:80])
    inside, host, size = f["uid_map"]
    assert inside == "0" and int(host) >= 65536 and size == "65536"  # root inside is not host root


def test_cgroup_v1_files_read_only_docker(docker_sandbox):
    """The engine mounts the cgroup v1 hierarchies (the process runtime mounts none): every
    release_agent / notify_on_release / cgroup.procs is read-only there."""
    r = docker_sandbox.exec(["python3", "-c", CGROUP_V1_WRITES], timeout=30)
    out = json.loads(r.stdout)
    assert out and all(v in ("EROFS", "EACCES", "EPERM") for v in out.values()), out


def test_host_loopback_unreachable_docker(docker_sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        r = docker_sandbox.exec(["python3", "-c", CONNECT,
                                 json.dumps([["host_lo", "AF_INET", ["127.0.0.1", port]]])], timeout=30)
        assert json.loads(r.stdout) == {"host_lo": "ConnectionRefusedError"}, r.stdout + r.stderr


def test_root_inside_is_an_unprivileged_host_uid_docker(docker_rt, docker_sandbox):
    """The agent (pid 1, root inside) as the host sees it: the first uid of the sandbox's range."""
    _, host, _ = docker_sandbox.read_file("/proc/self/uid_map").split()
    pid = docker_rt.api.inspect_container(docker_rt._name(docker_sandbox.id))["State"]["Pid"]
    with open(f"/proc/{pid}/status") as fh:
        ids = {k: v.split() for k, _, v in (line.partition(":") for line in fh) if k in ("Uid", "Gid")}
    assert ids["Uid"] == [host] * 4 and ids["Gid"] == [host] * 4
    assert docker_sandbox.run("id -u; touch /root/mine && stat -c %u /root/mine").output == "0\n0\n"


FILL_FILES = (
    "import os\nn = 0\ntry:\n    while True:\n        open(f'/root/f{n}', 'w').close(); n += 1\n"
    "except OSError as e:\n    print(n, e.strerror)")
FILL_LOG = (
    "import os\nout = {}\nfor fd in (1, 2):\n    try:\n"
    "        with open(f'/proc/1/fd/{fd}', 'wb') as f:\n"
    "            for _ in range(20):\n                f.write(bytes(1 << 20))\n"
    "        out[fd] = 'wrote'\n"
    "    except OSError as e:\n        out[fd] = e.strerror\nprint(out)")


def test_disk_fill_is_fenced_docker(docker_rt):
    """The writable layer is the sandbox's own 128 MiB disk; /.tumbler/run (a host dir) its own
    256 KiB tmpfs; /dev/shm is capped; the engine's log of the agent's output stops at 1 MiB."""
    from test_backends import docker_leftovers
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(runtime=docker_rt, image=IMAGE, disk="128m", inodes=4096)
    try:
        r = sb.exec("dd if=/dev/zero of=/root/fill bs=1M count=300", timeout=60)
        assert r.exit_code != 0 and "No space left on device" in r.stderr
        image = docker_rt.records / sb.id / "disk.img"
        assert os.stat(image).st_blocks * 512 <= 130 << 20  # the host holds at most the quota
        r = sb.exec(["sh", "-c", f"rm /root/fill && python3 -c \"{FILL_FILES}\""], timeout=60)
        count, _, error = r.stdout.strip().partition(" ")
        assert error == "No space left on device" and int(count) < 4096
        run = sb.exec("dd if=/dev/zero of=/.tumbler/run/fill bs=1M count=10", timeout=60)
        assert "No space left on device" in run.stderr
        shm = sb.exec("dd if=/dev/zero of=/dev/shm/fill bs=1M count=100", timeout=60)
        assert "No space left on device" in shm.stderr
        sb.exec(["python3", "-c", FILL_LOG], timeout=60)
        log = docker_rt._libpod_inspect(sb.id)["HostConfig"]["LogConfig"]
        assert os.stat(log["Path"]).st_size <= 2 << 20
        assert sb.run("echo still here").output == "still here\n"
    finally:
        sb.remove()
    assert docker_leftovers(docker_rt, sb.id) == []
