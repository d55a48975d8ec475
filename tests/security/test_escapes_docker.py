"""The escape suite against the docker backend (Podman's Docker-API service here): the same
attempts as test_escapes.py, made by the same helpers (escape_probes.py), in containers made by
DockerRuntime with its defaults (our seccomp profile, a user namespace of its own, its own
disk); then what only a container has (cgroup v1 files, the engine's log, conmon). Skipped where
no engine runs. What holds and what does not is in docs/SECURITY.md ("Docker backend").
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import time
from pathlib import Path

import pytest

from checks import IMAGE, docker_leftovers, remove_all_and_check
from escape_probes import (GREP_CONTROL, busy_cpu_seconds, change_hostname_and_clock,
                           connect_from, fill_fds, grep_everywhere, host_listeners, host_process,
                           host_processes_with, kill_host_then_all, new_secret, planted_on_host,
                           read_from, root_host_uid, run_probe, start_survivors)
from test_escapes import ATTEMPTS, FORBIDDEN_CAPS
from tumbler.runtime.spec import Limits, SandboxSpec

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


def _new(rt, **limits):
    from tumbler.local import LocalSandbox
    return LocalSandbox(runtime=rt, spec=SandboxSpec(image=IMAGE, limits=Limits(**limits)))


@pytest.fixture(scope="module")
def docker_sandbox(docker_rt):
    sb = _new(docker_rt)
    yield sb
    sb.remove()
    assert docker_leftovers(docker_rt, sb.id) == []


@pytest.fixture
def make_docker(docker_rt):
    """Make docker-backend sandboxes; afterwards remove them and check nothing is left."""
    made = []

    def make(**limits):
        made.append(_new(docker_rt, **limits))
        return made[-1]

    yield make
    remove_all_and_check(made, lambda sid: docker_leftovers(docker_rt, sid))


@pytest.fixture(scope="module")
def docker_probe(docker_sandbox):
    return run_probe(docker_sandbox)


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_attempt_is_blocked_docker(docker_probe, name):
    blocked, meaning = ATTEMPTS[name]
    if name not in docker_probe:
        pytest.skip(f"{name}: nothing to try on this kernel")
    assert docker_probe[name] in blocked, f"{name} ({meaning}) gave {docker_probe[name]}"


def test_own_init_is_traceable_inside_only_docker(docker_probe):
    assert docker_probe["ptrace_seize_own_init"] == "EPERM"  # the agent is non-dumpable
    assert docker_probe["ptrace_attach_host"] == "ESRCH"


def test_jail_facts_docker(docker_probe):
    f = docker_probe["facts"]
    assert f["no_new_privs"] == "1"
    assert f["seccomp"] == "2"
    held = {n for n, bit in FORBIDDEN_CAPS.items() if (f["cap_eff"] | f["cap_bnd"]) >> bit & 1}
    assert not held, held
    assert f["block_devices"] == []
    assert f["net_devices"] == ["lo"] and f["routes"] == []
    assert all(line.split()[-1] == "lo" for line in f["routes6"])
    for path, text in f["masked"].items():        # the engine's masked paths
        assert text == "" or text.startswith("error:"), (path, text[:80])
    fstypes = {line.split(" - ")[1].split()[0] for line in f["mounts"].splitlines()}
    assert not fstypes & {"debugfs", "tracefs", "securityfs", "bpf"}  # cgroup: the next test
    inside, host, size = f["uid_map"]
    assert inside == "0" and int(host) >= 65536 and size == "65536"  # root inside is not host root
    assert f["gid_map"] == f["uid_map"]


def test_cgroup_v1_files_read_only_docker(docker_sandbox):
    """The engine mounts the cgroup v1 hierarchies (the process runtime mounts none): every
    release_agent / notify_on_release / cgroup.procs is read-only there."""
    r = docker_sandbox.exec(["python3", "-c", CGROUP_V1_WRITES], timeout=30)
    out = json.loads(r.stdout)
    assert out and all(v in ("EROFS", "EACCES", "EPERM") for v in out.values()), out


def test_host_network_is_unreachable_docker(docker_sandbox):
    with host_listeners() as targets:  # the host itself connects to each
        out = connect_from(docker_sandbox, targets)
    assert set(out.values()) <= {"ConnectionRefusedError", "OSError"}, out


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
    sb = _new(docker_rt, disk="128m", inodes=4096)
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


def test_signals_reach_no_host_process_docker(make_docker):
    sb = make_docker()
    with host_process(root_host_uid(sb)) as host:  # root inside's own host uid
        assert kill_host_then_all(sb, host.pid) == "ESRCH"
        time.sleep(0.2)
        assert host.poll() is None  # the host process lives on
    assert sb.exec("echo agent alive").stdout == "agent alive\n"  # kill(-1) spares pid 1


def test_no_reading_neighbours_or_host_secrets_docker(docker_rt, docker_sandbox, make_docker,
                                                      make_sandbox, runtime):
    """From a docker sandbox: a neighbour docker sandbox's files (its layer in Podman's storage,
    its disk, its /.tumbler/run), a process-runtime sandbox's, secrets in our host dirs, both
    neighbours' agent sockets; and the docker neighbour's from the process-runtime sandbox."""
    neighbour, other = make_docker(), make_sandbox()
    secrets_in = {sb.id: new_secret("sandbox") for sb in (neighbour, other)}
    for sb in (neighbour, other):
        sb.write_file("/root/secret", secrets_in[sb.id])
    box_secret = new_secret("box")
    (docker_rt.box(neighbour.id) / "secret").write_text(box_secret)
    assert neighbour.read_file("/.tumbler/run/secret") == box_secret
    layer = docker_rt._inspect(neighbour.id)["GraphDriver"]["Data"]
    pid = docker_rt._inspect(neighbour.id)["State"]["Pid"]
    upper = Path(layer["UpperDir"])  # Podman's storage; a link to the disk (disk_dir/<id>)
    neighbours = [upper / "root/secret", upper.resolve() / "root/secret",
                  Path(layer["MergedDir"]) / "root/secret", f"/proc/{pid}/root/root/secret"]
    others = [runtime.upper_dir(other.id) / "root/secret",
              f"/proc/{runtime.init_pid(other.id)}/root/root/secret"]
    assert {Path(p).read_text() for p in neighbours} == {secrets_in[neighbour.id]}  # on the host
    assert {Path(p).read_text() for p in others} == {secrets_in[other.id]}
    sockets = [["docker_agent", "AF_UNIX", docker_rt.agent_socket(neighbour.id)],
               ["docker_agent_box", "AF_UNIX", str(docker_rt.box(neighbour.id) / "agent.sock")],
               ["process_agent", "AF_UNIX", runtime.agent_socket(other.id)]]
    assert all(os.path.exists(addr) for _, _, addr in sockets)
    box = docker_rt.box(neighbour.id) / "secret"
    dirs = [docker_rt.paths.home, docker_rt.paths.run, docker_rt.records, docker_rt.shared]
    with planted_on_host(dirs) as planted:
        out = read_from(docker_sandbox, [*neighbours, box, *others, *planted])
        out.update(connect_from(docker_sandbox, sockets))
        assert set(out.values()) <= {"FileNotFoundError", "PermissionError"}, out
        needles = [*secrets_in.values(), box_secret, *planted.values()]
        assert grep_everywhere(docker_sandbox, needles) == [GREP_CONTROL]
    out = read_from(other, [*neighbours, box])
    out.update(connect_from(other, sockets[:2]))
    assert set(out.values()) <= {"FileNotFoundError", "PermissionError"}, out


def test_hostname_and_clock_of_host_unchanged_docker(docker_sandbox):
    before = socket.gethostname()
    assert change_hostname_and_clock(docker_sandbox) == "sandbox\n"
    assert socket.gethostname() == before
    assert time.time() > 1.7e9


def _processes_of(uids: range) -> dict[int, str]:
    """Host processes whose real uid is in `uids`: pid -> its start time (clock ticks)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as fh:
                uid = next(int(line.split()[1]) for line in fh if line.startswith("Uid:"))
            with open(f"/proc/{pid}/stat") as fh:
                start = fh.read().rpartition(")")[2].split()[19]
        except (OSError, StopIteration):
            continue
        if uid in uids:
            found[int(pid)] = start
    return found


def test_no_process_outlives_its_sandbox_docker(docker_rt):
    """Survivors started inside; after removal none of the sandbox's processes (any host
    process of its uid range, seen before) lives, nor the engine's conmon of it."""
    sb = _new(docker_rt)
    marker = f"tumbler-survivor-{secrets.token_hex(4)}"
    try:
        start_survivors(sb, marker)
        inside = sb.exec("ps -eo args").stdout
        assert inside.count(marker) == 2, inside  # both run before the removal
        first = root_host_uid(sb)
        before = _processes_of(range(first, first + 65536))
        assert len(before) >= 3, before           # the agent and both survivors
    finally:
        sb.remove()
    assert host_processes_with(marker) == []
    after = _processes_of(range(first, first + 65536))
    assert {pid for pid, start in before.items() if after.get(pid) == start} == set()
    assert docker_leftovers(docker_rt, sb.id) == []


def test_fd_limit_holds_docker(make_docker):
    count, error, hard_limit = fill_fds(make_docker(nofile=256))
    assert error == "Too many open files" and count < 256
    assert hard_limit == "kept"  # raising it needs CAP_SYS_RESOURCE


def test_cpu_limit_holds_docker(make_docker):
    used = busy_cpu_seconds(make_docker(cpus=0.5))
    assert used < 2 * 0.5 * 1.3, f"{used:.2f} CPU-seconds in 2 s under a 0.5-core limit"
