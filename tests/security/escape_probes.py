"""Escape attempts that run INSIDE a sandbox, as root there, and the host side of each, shared
by the escape suites of every backend (test_escapes.py, test_escapes_docker.py).

`PROBE` is sent to the sandbox's python3 with a JSON argument (host facts the attempts aim at:
a host pid, the host disk's device numbers) and prints one JSON object: attempt name -> "ok"
when the call succeeded, else the errno's name. Every attempt is made so that even if it
succeeded it would change nothing on the host (an invalid magic number, the current time, the
current hostname, the value a file already holds): the suite proves a door is shut without
walking through it. The functions below make one attempt each from a given sandbox and return
what came back, plus the targets they aim at (a host process, listeners, planted secrets); the
suites assert on it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

PROBE = r'''
import ctypes, errno, json, os, socket, struct, sys, time

ARGS = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
R = {}


def arg(a):
    if isinstance(a, int):
        return ctypes.c_long(a)
    return a


def sc(name, nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    e = ctypes.get_errno()
    R[name] = "ok" if r >= 0 else errno.errorcode.get(e, str(e))
    return r


def py(name, fn):
    try:
        fn()
        R[name] = "ok"
    except OSError as exc:
        R[name] = errno.errorcode.get(exc.errno, str(exc.errno))


def write_same(path):
    """Write back what `path` already holds: harmless even if the write were allowed."""
    with open(path, "rb") as fh:
        old = fh.read()
    with open(path, "wb") as fh:
        fh.write(old or b"\n")


host_pid = ARGS["host_pid"]
buf = ctypes.create_string_buffer(512)
true_fd = os.open("/usr/bin/true", os.O_RDONLY)

# kernel modules, kexec, reboot (invalid images and magic numbers: nothing could happen)
sc("init_module", 175, buf, 512, b"")
sc("finit_module", 313, true_fd, b"", 0)
sc("delete_module", 176, b"tumbler_no_such_module", os.O_NONBLOCK)
sc("kexec_load", 246, 0, 0, 0, 0xDEAD0000)
sc("kexec_file_load", 320, true_fd, -1, 0, 0, 0xDEAD0000)
sc("reboot", 169, 0, 0, 0, 0)
# keyrings, bpf, perf, io_uring, userfaultfd, syslog
sc("keyctl", 250, 0, -3, 0)
sc("add_key", 248, b"user", b"tumbler", b"x", 1, -3)
sc("request_key", 249, b"user", b"tumbler", 0, -3)
sc("bpf", 321, 0, buf, 72)
attr = ctypes.create_string_buffer(struct.pack("=IIQ", 1, 128, 0) + bytes(112))  # sw cpu-clock
sc("perf_event_open", 298, attr, 0, -1, -1, 0)
sc("io_uring_setup", 425, 1, buf)
sc("userfaultfd", 323, 0)
sc("syslog", 103, 10, 0, 0)
# mounts: tmpfs, proc, cgroup v1 with a release_agent (CVE-2022-0492), unmasking /proc/kcore
sc("mount_tmpfs", 165, b"none", b"/mnt", b"tmpfs", 0, 0)
sc("mount_proc", 165, b"proc", b"/mnt", b"proc", 0, 0)
sc("mount_cgroup_release_agent", 165, b"cgroup", b"/mnt", b"cgroup", 0, b"rdma,release_agent=/x")
sc("umount_proc_kcore", 166, b"/proc/kcore", 2)
sc("umount_proc_sys", 166, b"/proc/sys", 2)
# namespaces: a user namespace to regain capabilities, joining others
sc("unshare_user", 272, 0x10000000)
sc("unshare_mount_cgroup", 272, 0x00020000 | 0x02000000)
pid = sc("clone_newuser", 56, 0x10000000 | 17, 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
elif pid > 0:
    os.waitpid(pid, 0)
sc("clone3", 435, buf, 88)
ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
sc("setns", 308, ns_fd, 0)
# time and hostname: set them to what they are now
now = time.time()
tv = ctypes.create_string_buffer(struct.pack("=qq", int(now), 0))
sc("settimeofday", 164, tv, 0)
ts = ctypes.create_string_buffer(struct.pack("=qq", int(now), 0))
sc("clock_settime", 227, 0, ts)
hn = socket.gethostname().encode()
sc("sethostname", 170, hn, len(hn))
# the "shocker" escape: a handle for inode 2 (the root of an ext4 filesystem)
root_fd = os.open("/", os.O_RDONLY)
handle = ctypes.create_string_buffer(struct.pack("=Ii", 8, 1) + struct.pack("=II", 2, 0))
sc("open_by_handle_at", 304, root_fd, handle, os.O_RDONLY)
# raw port I/O
sc("iopl", 172, 3)
sc("ioperm", 173, 0x80, 1, 1)
# processes outside: ptrace, signals, memory, pidfd of a host pid
sc("ptrace_attach_host", 101, 16, host_pid, 0, 0)
sc("kill_host", 62, host_pid, 0)
sc("pidfd_open_host", 434, host_pid, 0)
iov = ctypes.create_string_buffer(struct.pack("=QQ", ctypes.addressof(buf), 8))
sc("process_vm_readv_host", 310, host_pid, iov, 1, iov, 1, 0)
# the sandbox's own init (the agent) from a session: PTRACE_SEIZE does not stop it
sc("ptrace_seize_own_init", 101, 0x4206, 1, 0, 0)
# sockets: kernel crypto, vsock (to the VM host), packet and raw sockets
for name, fam, typ, proto in (("socket_af_alg", 38, 5, 0), ("socket_af_vsock", 40, 1, 0),
                              ("socket_af_packet", 17, 3, 0), ("socket_raw_icmp", 2, 3, 1)):
    fd = sc(name, 41, fam, typ, proto)
    if fd >= 0:
        os.close(fd)
# device nodes: the host's disk, made and opened
dev = os.makedev(ARGS["disk_major"], ARGS["disk_minor"])
py("mknod_host_disk", lambda: os.mknod("/tmp/hostdisk", 0o60600, dev))
py("open_host_disk", lambda: os.close(os.open("/tmp/hostdisk", os.O_RDONLY)))
# read-only /proc and /sys: write back what is there already
py("write_sysrq_trigger", lambda: open("/proc/sysrq-trigger", "w").write("h"))
py("write_proc_sys_hostname", lambda: write_same("/proc/sys/kernel/hostname"))
py("write_proc_sys_core_pattern", lambda: write_same("/proc/sys/kernel/core_pattern"))
py("write_sys_lo_mtu", lambda: write_same("/sys/class/net/lo/mtu"))
for path in ("/sys/kernel/uevent_helper", "/sys/kernel/mm/transparent_hugepage/enabled",
             "/sys/kernel/profiling", "/sys/power/state"):
    if os.path.exists(path):
        py("write_sys_kernel", lambda: write_same(path))
        R["write_sys_kernel_path"] = path
        break

# facts about the jail, for the suite to assert
def read(path, size=4096):
    try:
        with open(path, "rb") as fh:
            return fh.read(size).decode(errors="replace")
    except OSError as exc:
        return "error:" + errno.errorcode.get(exc.errno, str(exc.errno))

status = dict(line.split(":\t", 1) for line in read("/proc/self/status").splitlines() if ":\t" in line)
R["facts"] = {
    "uid_map": read("/proc/self/uid_map").split(),
    "gid_map": read("/proc/self/gid_map").split(),
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "seccomp": status.get("Seccomp", "").strip(),
    "cap_eff": int(status.get("CapEff", "0"), 16),
    "cap_bnd": int(status.get("CapBnd", "0"), 16),
    "masked": {p: read(p) for p in ("/proc/kcore", "/proc/keys", "/proc/timer_list",
                                     "/proc/sched_debug", "/proc/latency_stats", "/proc/acpi",
                                     "/proc/scsi", "/sys/firmware")},
    "mounts": read("/proc/self/mountinfo", -1),  # all of it: a container's runs past 4 KiB
    "cgroup_dir": sorted(os.listdir("/sys/fs/cgroup")) if os.path.isdir("/sys/fs/cgroup") else [],
    "block_devices": sorted(n for n in os.listdir("/dev")
                            if os.path.exists("/dev/" + n) and (os.stat("/dev/" + n).st_mode & 0o170000) == 0o060000),
    "net_devices": sorted(os.listdir("/sys/class/net")),
    "routes": read("/proc/net/route").splitlines()[1:],
    "routes6": read("/proc/net/ipv6_route").splitlines(),
}
print(json.dumps(R))
'''

CONNECT = r'''
import json, socket, sys
out = {}
for name, fam, addr in json.loads(sys.argv[1]):
    s = socket.socket(getattr(socket, fam), socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(tuple(addr) if isinstance(addr, list) else addr)
        out[name] = "connected"
    except OSError as exc:
        out[name] = type(exc).__name__
    finally:
        s.close()
print(json.dumps(out))
'''

KILL = r"""
import errno, json, os, signal, sys
try:
    os.kill(int(sys.argv[1]), signal.SIGKILL)
    out = "ok"
except OSError as exc:
    out = errno.errorcode[exc.errno]
print(out, flush=True)
os.kill(-1, signal.SIGKILL)  # every process this one may signal but itself and its pid 1
"""

READ = r"""
import json, sys
out = {}
for p in json.loads(sys.argv[1]):
    try:
        with open(p) as fh:
            out[p] = fh.read()
    except OSError as exc:
        out[p] = type(exc).__name__
print(json.dumps(out))
"""

SURVIVOR = r"""
import os, signal, sys, time
if os.fork(): sys.exit(0)
os.setsid()
if os.fork(): sys.exit(0)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
time.sleep(3600)
"""

FILL_FDS = r"""
import os, resource
fds = []
try:
    while True:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as e:
    print(len(fds), e.strerror)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)); print("raised")
except (OSError, ValueError):
    print("kept")
"""


def root_host_uid(sb) -> int:
    """The host uid that root inside `sb` is."""
    return int(sb.read_file("/proc/self/uid_map").split()[1])


@contextlib.contextmanager
def host_process(uid: int):
    """A `sleep` on the host running as `uid`: with the sandbox's own uid, only the pid namespace
    stands between it and a signal from inside."""
    proc = subprocess.Popen(["sleep", "600"], user=uid)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def run_probe(sb) -> dict:
    """PROBE's answer from inside `sb`, aimed at a host process running as root inside's own host
    uid (so only the pid namespace hides it) and at the host's disk."""
    st = os.stat("/")
    with host_process(root_host_uid(sb)) as target:
        host = {"host_pid": target.pid, "disk_major": os.major(st.st_dev),
                "disk_minor": os.minor(st.st_dev)}
        r = sb.exec(["python3", "-c", PROBE, json.dumps(host)], timeout=60)
        assert target.poll() is None
    assert r.exit_code == 0, r.stderr
    return json.loads(max(r.stdout.splitlines(), key=len))


def kill_host_then_all(sb, host_pid: int) -> str:
    """`kill(host_pid, SIGKILL)`, then `kill(-1, SIGKILL)`, from inside; the first one's answer."""
    return sb.exec(["python3", "-c", KILL, str(host_pid)], timeout=30).stdout.strip()


@contextlib.contextmanager
def host_listeners():
    """Listeners in the host's network namespace (TCP on 127.0.0.1 and ::1, an abstract unix
    socket), as CONNECT's targets; the host itself connects to each first."""
    with contextlib.ExitStack() as stack:
        def listen(family, addr):
            s = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            s.bind(addr)
            s.listen(8)
            return list(s.getsockname()[:2]) if family != socket.AF_UNIX else addr

        targets = [["tcp4", "AF_INET", listen(socket.AF_INET, ("127.0.0.1", 0))]]
        try:
            targets.append(["tcp6", "AF_INET6", listen(socket.AF_INET6, ("::1", 0))])
        except OSError:
            pass  # no IPv6 on this host
        name = "\0tumbler-escape-" + secrets.token_hex(4)
        targets.append(["abstract_unix", "AF_UNIX", listen(socket.AF_UNIX, name)])
        for _, fam, addr in targets:
            with socket.socket(getattr(socket, fam), socket.SOCK_STREAM) as s:
                s.connect(tuple(addr) if isinstance(addr, list) else addr)
        yield targets


def connect_from(sb, targets: list) -> dict:
    """CONNECT's answer from inside `sb`: target name -> "connected" or the exception's name."""
    return json.loads(sb.exec(["python3", "-c", CONNECT, json.dumps(targets)], timeout=30).stdout)


def new_secret(where: str) -> str:
    return f"tumbler-secret-{where}-{secrets.token_hex(8)}"


@contextlib.contextmanager
def planted_on_host(dirs: list[Path]):
    """A file in each host dir holding a secret of its own; yields {path: secret}."""
    planted = {d / f"escape-test-{secrets.token_hex(4)}": new_secret("host") for d in dirs}
    try:
        for path, secret in planted.items():
            path.write_text(secret)
        yield planted
    finally:
        for path in planted:
            path.unlink(missing_ok=True)


def read_from(sb, paths: list) -> dict:
    """READ's answer from inside `sb`: path -> its text, or the exception's name."""
    return json.loads(sb.exec(["python3", "-c", READ, json.dumps([str(p) for p in paths])],
                              timeout=30).stdout)


GREP_CONTROL = "/tmp/grep-control"


def grep_everywhere(sb, needles: list[str]) -> list[str]:
    """The files, in the whole filesystem `sb` sees (but /proc, /sys, /dev), that hold any of
    `needles`; a control file with a needle of its own is planted in /tmp for the scan to find."""
    control = new_secret("control")
    sb.write_file(GREP_CONTROL, control)
    try:
        scan = sb.exec(["grep", "-rlsF", "--exclude-dir=proc", "--exclude-dir=sys",
                        "--exclude-dir=dev", *[f"-e{n}" for n in [*needles, control]], "/"],
                       timeout=180)
    finally:
        sb.exec(["rm", "-f", GREP_CONTROL])
    return scan.stdout.splitlines()


def start_survivors(sb, marker: str) -> None:
    """A double-forked daemon in its own session that ignores SIGHUP, and `nohup setsid` of a
    sleep, both carrying `marker` in their command line."""
    sb.exec(["python3", "-c", SURVIVOR, marker])
    sb.exec(f"nohup setsid bash -c 'exec -a {marker} sleep 3600' >/dev/null 2>&1 &")
    time.sleep(0.3)


def host_processes_with(marker: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10)
    return [line for line in ps.stdout.splitlines() if marker in line]


def fill_fds(sb) -> tuple[int, str, str]:
    """Open fds until refused, then try to raise the hard limit: (fds opened, the error,
    "raised" or "kept")."""
    first, second = sb.exec(["python3", "-c", FILL_FDS], timeout=30).stdout.splitlines()
    count, _, error = first.partition(" ")
    return int(count), error, second


def busy_cpu_seconds(sb) -> float:
    """CPU-seconds two busy loops use in 2 s of wall time (4 if nothing holds them)."""
    before = sb.stats().cpu_seconds
    sb.exec("timeout 2 sh -c 'while :; do :; done' & timeout 2 sh -c 'while :; do :; done'; wait",
            timeout=30)
    return sb.stats().cpu_seconds - before


def change_hostname_and_clock(sb) -> str:
    """`hostname pwned; date -s 2001-01-01` inside; returns the hostname inside afterwards."""
    sb.exec("hostname pwned; date -s '2001-01-01'")
    return sb.exec("hostname").stdout
