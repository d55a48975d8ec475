"""The escape suite: from inside a real sandbox, as root there, each attempt must fail.

Most system-call attempts run in one python3 process inside one sandbox (`escape_probes.PROBE`)
and each is asserted by name; attempts that need a sandbox of their own (limits, kill(-1),
removal) get one. docs/SECURITY.md lists every attempt, how it is made and how it fails.
Traffic goes only to loopback: the listeners are the test's own, on 127.0.0.1 / ::1 / an
abstract unix socket of the host's network namespace.
"""
from __future__ import annotations

import os
import platform
import secrets
import socket
import subprocess
import time
from pathlib import Path

import pytest

from checks import IMAGE, leftovers
from escape_probes import (GREP_CONTROL, busy_cpu_seconds, change_hostname_and_clock,
                           connect_from, fill_fds, grep_everywhere, host_listeners, host_process,
                           host_processes_with, kill_host_then_all, new_secret, planted_on_host,
                           read_from, root_host_uid, run_probe, start_survivors)
from tumbler.runtime import idmap
from tumbler.runtime.spec import Limits, SandboxSpec

pytestmark = [
    pytest.mark.security,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="probes use x86_64 syscall numbers"),
]

SECCOMP_DENIED = {"EPERM", "ENOSYS"}  # what the filter answers (listed calls / default action)
NOT_VISIBLE = {"ESRCH"}               # a host pid does not exist in the sandbox's pid namespace
READ_ONLY = {"EROFS", "EACCES", "EPERM", "ENOENT"}

# attempt name -> (errnos that mean "blocked", what a success would have meant)
ATTEMPTS = {
    "init_module": (SECCOMP_DENIED, "load a kernel module from memory"),
    "finit_module": (SECCOMP_DENIED, "load a kernel module from a file"),
    "delete_module": (SECCOMP_DENIED, "unload a kernel module"),
    "kexec_load": (SECCOMP_DENIED, "load a new kernel"),
    "kexec_file_load": (SECCOMP_DENIED, "load a new kernel from a file"),
    "reboot": (SECCOMP_DENIED, "reboot the host"),
    "keyctl": (SECCOMP_DENIED, "read or change kernel keyrings"),
    "add_key": (SECCOMP_DENIED, "add a key to a kernel keyring"),
    "request_key": (SECCOMP_DENIED, "request a key"),
    "bpf": (SECCOMP_DENIED, "load eBPF programs or maps"),
    "perf_event_open": (SECCOMP_DENIED, "perf events (side channels, kernel bugs)"),
    "io_uring_setup": (SECCOMP_DENIED, "io_uring (a large kernel attack surface)"),
    "userfaultfd": (SECCOMP_DENIED, "userfaultfd (race widening in kernel exploits)"),
    "syslog": (SECCOMP_DENIED, "read the kernel log"),
    "mount_tmpfs": (SECCOMP_DENIED, "mount a tmpfs"),
    "mount_proc": (SECCOMP_DENIED, "mount a fresh /proc without masks"),
    "mount_cgroup_release_agent": (SECCOMP_DENIED, "cgroup v1 release_agent (CVE-2022-0492)"),
    "umount_proc_kcore": (SECCOMP_DENIED, "unmask /proc/kcore"),
    "umount_proc_sys": (SECCOMP_DENIED, "make /proc/sys writable"),
    "unshare_user": (SECCOMP_DENIED, "new user namespace: full caps inside it"),
    "unshare_mount_cgroup": (SECCOMP_DENIED, "new mount + cgroup namespaces"),
    "clone_newuser": (SECCOMP_DENIED, "clone into a new user namespace"),
    "clone3": (SECCOMP_DENIED, "clone3 (flags unfilterable)"),
    "setns": (SECCOMP_DENIED, "join another namespace"),
    "settimeofday": (SECCOMP_DENIED, "set the host clock"),
    "clock_settime": (SECCOMP_DENIED, "set the host clock"),
    "sethostname": (SECCOMP_DENIED, "set a hostname"),
    "open_by_handle_at": (SECCOMP_DENIED, "open host files by handle (the 'shocker' escape)"),
    "iopl": (SECCOMP_DENIED, "raw port I/O"),
    "ioperm": (SECCOMP_DENIED, "raw port I/O"),
    "ptrace_attach_host": (NOT_VISIBLE, "ptrace a host process"),
    "kill_host": (NOT_VISIBLE, "signal a host process"),
    "pidfd_open_host": (NOT_VISIBLE, "get a pidfd of a host process"),
    "process_vm_readv_host": (NOT_VISIBLE, "read a host process's memory"),
    "socket_af_alg": (SECCOMP_DENIED, "kernel crypto sockets"),
    "socket_af_vsock": (SECCOMP_DENIED, "vsock to the VM host"),
    "socket_af_packet": ({"EPERM"}, "packet sockets (no CAP_NET_RAW)"),
    "socket_raw_icmp": ({"EPERM"}, "raw IP sockets (no CAP_NET_RAW)"),
    "mknod_host_disk": ({"EPERM"}, "make a device node for the host disk"),
    "open_host_disk": ({"ENOENT", "EPERM", "EACCES"}, "read the host disk"),
    "write_sysrq_trigger": (READ_ONLY, "trigger sysrq (crash, reboot the host)"),
    "write_proc_sys_hostname": (READ_ONLY, "write /proc/sys"),
    "write_proc_sys_core_pattern": (READ_ONLY, "core_pattern: run a program as host root"),
    "write_sys_lo_mtu": (READ_ONLY, "write /sys"),
    "write_sys_kernel": (READ_ONLY, "write /sys/kernel, /sys/power"),
}
# Capabilities root inside must not hold (numbers from linux/capability.h).
FORBIDDEN_CAPS = {"DAC_READ_SEARCH": 2, "NET_ADMIN": 12, "NET_RAW": 13, "SYS_MODULE": 16,
                  "SYS_RAWIO": 17, "SYS_PTRACE": 19, "SYS_ADMIN": 21, "SYS_BOOT": 22,
                  "SYS_RESOURCE": 24, "SYS_TIME": 25, "MKNOD": 27, "SYSLOG": 34,
                  "PERFMON": 38, "BPF": 39}


def _new(runtime, **limits):
    from tumbler.local import LocalSandbox
    return LocalSandbox(runtime=runtime, spec=SandboxSpec(image=IMAGE, limits=Limits(**limits)))


@pytest.fixture(scope="module")
def hostile(runtime):
    sb = _new(runtime)
    yield sb
    sb.remove()
    assert leftovers(runtime, sb.id) == []


@pytest.fixture(scope="module")
def probe(hostile):
    return run_probe(hostile)


@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_attempt_is_blocked(probe, name):
    blocked, meaning = ATTEMPTS[name]
    if name not in probe:
        pytest.skip(f"{name}: nothing to try on this kernel")
    assert probe[name] in blocked, f"{name} ({meaning}) gave {probe[name]}"


def test_own_init_is_traceable_inside_only(probe):
    # root inside may trace its own processes (the agent included): that is the sandbox's own
    # business, as in Docker; the host pid attempts above show nothing outside is reachable.
    assert probe["ptrace_seize_own_init"] == "EPERM"   # the agent is non-dumpable (issue 23)
    assert probe["ptrace_attach_host"] == "ESRCH"


def test_jail_facts(probe):
    facts = probe["facts"]
    assert facts["uid_map"] == ["0", str(idmap.HOST_BASE), str(idmap.SIZE)]
    assert facts["gid_map"] == ["0", str(idmap.HOST_BASE), str(idmap.SIZE)]
    assert facts["no_new_privs"] == "1"
    assert facts["seccomp"] == "2"  # filter mode
    held = {name for name, bit in FORBIDDEN_CAPS.items() if facts["cap_eff"] >> bit & 1}
    held |= {name for name, bit in FORBIDDEN_CAPS.items() if facts["cap_bnd"] >> bit & 1}
    assert held == set()
    for path, content in facts["masked"].items():
        assert content == "" or content.startswith("error:"), f"{path} is readable: {content[:80]}"
    fstypes = {line.split(" - ")[1].split()[0] for line in facts["mounts"].splitlines()}
    assert not fstypes & {"cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "bpf"}
    assert facts["cgroup_dir"] == []
    assert facts["block_devices"] == []
    assert facts["net_devices"] == ["lo"]
    assert facts["routes"] == []
    assert all(line.split()[-1] == "lo" for line in facts["routes6"])


def test_host_sees_root_inside_as_unprivileged(hostile, runtime):
    with open(f"/proc/{runtime.init_pid(hostile.id)}/status") as fh:
        uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
    assert set(uids) == {str(idmap.HOST_BASE)}


def test_signals_reach_no_host_process(make_sandbox):
    sb = make_sandbox()
    with host_process(root_host_uid(sb)) as host:  # root inside's own host uid
        assert kill_host_then_all(sb, host.pid) == "ESRCH"
        time.sleep(0.2)
        assert host.poll() is None  # the host process lives on
    assert sb.exec("echo agent alive").stdout == "agent alive\n"  # kill(-1) spares init


def test_host_network_is_unreachable(hostile):
    with host_listeners() as targets:  # the host itself connects to each
        out = connect_from(hostile, targets)
    assert set(out.values()) <= {"ConnectionRefusedError", "OSError"}, out


def test_no_reading_other_sandboxes_or_host_secrets(hostile, make_sandbox, runtime):
    other = make_sandbox()
    secret = new_secret("sandbox")
    other.write_file("/root/secret", secret)
    others = [runtime.upper_dir(other.id) / "root" / "secret",
              f"/proc/{runtime.init_pid(other.id)}/root/root/secret"]
    assert {Path(p).read_text() for p in others} == {secret}  # there, seen from the host
    with planted_on_host([runtime.paths.home, runtime.paths.run]) as planted:
        out = read_from(hostile, [*others, *planted])
        out.update(connect_from(hostile, [["agent", "AF_UNIX", runtime.agent_socket(other.id)]]))
        assert set(out.values()) <= {"FileNotFoundError", "PermissionError"}, out
        # and nowhere in the sandbox's whole view of the filesystem (but the scan's control)
        assert grep_everywhere(hostile, [secret, *planted.values()]) == [GREP_CONTROL]


def test_hostname_and_clock_of_host_unchanged(hostile):
    before = socket.gethostname()
    assert change_hostname_and_clock(hostile) == "sandbox\n"
    assert socket.gethostname() == before
    assert time.time() > 1.7e9


def test_disk_quota_stops_filling_the_host(make_sandbox, runtime):
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(disk="128m", inodes=4096)))
    r = sb.exec("dd if=/dev/zero of=/root/fill bs=1M count=300", timeout=60)
    assert r.exit_code != 0 and "No space left on device" in r.stderr
    image = runtime.paths.sandboxes / sb.id / "disk.img"
    assert os.stat(image).st_blocks * 512 <= 130 << 20  # the host holds at most the quota
    r = sb.exec("rm /root/fill && python3 -c \"\nimport os\nn = 0\ntry:\n"
                "    while True:\n        open(f'/root/f{n}', 'w').close(); n += 1\n"
                "except OSError as e:\n    print(n, e.strerror)\"", timeout=60)
    count, _, error = r.stdout.strip().partition(" ")
    assert error == "No space left on device" and int(count) < 4096
    shm = sb.exec("dd if=/dev/zero of=/dev/shm/fill bs=1M count=100", timeout=60)
    assert "No space left on device" in shm.stderr  # /dev/shm has its own 64 MiB cap


def test_fork_bomb_stops_at_pids_limit(make_sandbox):
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(pids=64)))
    code = ("import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(60); os._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print(n, e.strerror)\n")
    r = sb.exec(["python3", "-c", code], timeout=60)
    count, _, error = r.stdout.strip().partition(" ")
    assert error == "Resource temporarily unavailable" and int(count) < 64
    assert subprocess.run(["true"], timeout=10).returncode == 0  # the host still forks


def test_memory_hog_is_killed_inside(make_sandbox):
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(memory="64m")))
    r = sb.exec(["python3", "-c", "x = bytearray(512 << 20)"], timeout=60)
    assert r.exit_code in (137, -9)
    assert sb.exec("echo alive").stdout == "alive\n"


def test_no_process_outlives_its_sandbox(runtime):
    sb = _new(runtime)
    marker = f"tumbler-survivor-{secrets.token_hex(4)}"
    try:
        start_survivors(sb, marker)
        inside = sb.exec("ps -eo args").stdout
        assert inside.count(marker) == 2, inside  # both run before the removal
    finally:
        sid = sb.id
        sb.remove()
    assert host_processes_with(marker) == []
    assert leftovers(runtime, sid) == []


def test_fd_limit_holds(make_sandbox):
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(nofile=256)))
    count, error, hard_limit = fill_fds(sb)
    assert error == "Too many open files" and count < 256
    assert hard_limit == "kept"  # raising it needs CAP_SYS_RESOURCE


def test_cpu_limit_holds(make_sandbox):
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE, limits=Limits(cpus=0.5)))
    used = busy_cpu_seconds(sb)
    assert used < 2 * 0.5 * 1.3, f"{used:.2f} CPU-seconds in 2 s under a 0.5-core limit"
