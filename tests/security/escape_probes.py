"""Escape attempts that run INSIDE a sandbox, as root there, written as one python3 script.

`PROBE` is sent to the sandbox's python3 with a JSON argument (host facts the attempts aim at:
a host pid, the host disk's device numbers) and prints one JSON object: attempt name -> "ok"
when the call succeeded, else the errno's name. Every attempt is made so that even if it
succeeded it would change nothing on the host (an invalid magic number, the current time, the
current hostname, the value a file already holds): the suite proves a door is shut without
walking through it.
"""

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
def read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(4096).decode(errors="replace")
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
    "mounts": read("/proc/self/mountinfo"),
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
