"""The OCI runtime config (`config.json`) of one process-runtime sandbox.

The jail: its own user namespace (root inside = HOST_BASE outside), pid, mount, ipc, uts,
cgroup and (unless network="host") network namespaces; Docker's default capabilities and
seccomp profile; no_new_privs; read-only and masked /proc paths; cgroup limits from `Limits`.
The agent's own interpreter and package (`agentpy`) are bind-mounted read-only at /.tumbler,
and the agent is started from there as the sandbox's pid 1: nothing of the image runs it.
"""
from __future__ import annotations

from pathlib import Path

from tumbler.runtime import agentpy, idmap
from tumbler.runtime.egress import proxy_env
from tumbler.runtime.seccomp import oci_seccomp
from tumbler.runtime.spec import SandboxSpec

AGENT_MOUNT = agentpy.MOUNT
LISTEN_FD = 0  # the host passes the listening socket as the container process's stdin
CPU_PERIOD_US = 100_000

# Docker's default set less CAP_NET_RAW and CAP_MKNOD (as Podman does). Inside a user namespace
# mknod of a device fails anyway, and raw and packet sockets are kernel surface a shell does
# not need (ping is the only common user, and there is no network to ping by default).
CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID",
    "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
})

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}

# sys.path is the read-only mount's alone: the agent's package, then the interpreter's stdlib.
AGENT_BOOT = (f"import sys; sys.path.insert(0, {agentpy.MOUNT!r}); "
              "from agent.server import main; main()")


def agent_args() -> list[str]:
    return [*agentpy.AGENT_ARGV, "-c", AGENT_BOOT, "--listen-fd", str(LISTEN_FD)]


def oci_config(spec: SandboxSpec, *, rootfs: Path, agent_root: Path, cgroup_path: str) -> dict:
    env = {**BASE_ENV, **(proxy_env() if spec.network == "egress" else {}), **spec.env}
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": agent_args(),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: sorted(CAPABILITIES) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": spec.limits.nofile, "soft": spec.limits.nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": spec.hostname,
        "mounts": _mounts(spec, agent_root),
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": idmap.HOST_BASE, "size": idmap.SIZE}],
            "gidMappings": [{"containerID": 0, "hostID": idmap.HOST_BASE, "size": idmap.SIZE}],
            "namespaces": _namespaces(spec),
            "cgroupsPath": cgroup_path,
            "resources": _resources(spec),
            "seccomp": oci_seccomp(CAPABILITIES),
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "rootfsPropagation": "private",
        },
    }


def _namespaces(spec: SandboxSpec) -> list[dict]:
    kinds = ["pid", "ipc", "uts", "mount", "user", "cgroup"]
    if spec.network != "host":   # "egress" too: its only way out is the proxy's socket
        kinds.append("network")
    return [{"type": k} for k in kinds]


def _mounts(spec: SandboxSpec, agent_root: Path) -> list[dict]:
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": AGENT_MOUNT, "type": "bind", "source": str(agent_root),
         "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    if spec.network != "host":
        # A fresh sysfs is allowed (and shows only our own network devices) in our own netns.
        mounts.append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    else:
        mounts.append({"destination": "/sys", "type": "bind", "source": "/sys",
                       "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
        mounts.append({"destination": "/etc/resolv.conf", "type": "bind",
                       "source": "/etc/resolv.conf", "options": ["bind", "ro"]})
    return mounts


def _resources(spec: SandboxSpec) -> dict:
    lim = spec.limits
    return {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": lim.memory, "swap": lim.memory},
        "cpu": {"quota": int(lim.cpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
        "pids": {"limit": lim.pids},
    }
