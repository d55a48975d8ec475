"""Docker's default seccomp profile, turned into the OCI form that runc reads.

The profile ships with Podman's containers-common (`/usr/share/containers/seccomp.json`) in
Docker's format: rules carry `includes`/`excludes` conditions on architecture and capabilities.
OCI's `linux.seccomp` has no conditions, so we keep the rules whose conditions hold for this
machine's architecture and the capabilities the sandbox is granted.

Deliberate differences from the file as shipped, so the result is at least as strict as
Docker's default profile (moby/profiles seccomp/default.json) for the same capabilities:
- Only the native architecture is allowed (no 32-bit x86 or x32 system calls): less kernel
  surface, and libseccomp compiles the filter in half the time (runc does it at every start).
- Podman's copy allows mount, unshare, setns and namespace-creating clone to everyone and leaves
  the check to the kernel; Docker's allows them only with CAP_SYS_ADMIN. Without CAP_SYS_ADMIN
  we follow Docker: those calls fail, so root inside cannot make a user namespace of its own.
- Podman's copy also allows reboot, syslog, pidfd_getfd and the NUMA memory-policy calls to
  everyone; Docker gates each on a capability (`CAP_GATED`), and so do we.
- Docker refuses sockets of the AF_ALG (kernel crypto) and AF_VSOCK (host <-> VM) families,
  two kernel surfaces a shell never needs; Podman's copy allows them. We refuse them.
"""
from __future__ import annotations

import functools
import json
import platform
from pathlib import Path

from tumbler.errors import RuntimeFailure

PROFILE_PATHS = (Path("/usr/share/containers/seccomp.json"), Path("/etc/containers/seccomp.json"))

# Docker names machines as Go does; the profile's archMap is keyed by libseccomp names.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}
# Allowed only to a process holding CAP_SYS_ADMIN (as in Docker's profile).
ADMIN_ONLY = frozenset({
    "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "clone", "clone3",
})
# The kernel keyring is not namespaced: Docker's profile denies it to everyone, Podman's allows
# it. Denied here, which also makes it safe for sandboxes to share the host's session keyring
# (`runc run --no-new-keyring`): a new keyring per sandbox, all owned by one host uid, runs
# into the kernel's 200-keys-per-user quota after ~200 sandboxes.
DENIED = frozenset({"keyctl", "add_key", "request_key"})
# Calls Podman's profile allows to all, Docker's only to a holder of the capability named.
CAP_GATED = {
    "reboot": "CAP_SYS_BOOT",
    "syslog": "CAP_SYSLOG",             # the kernel log leaks addresses and host events
    "pidfd_getfd": "CAP_SYS_PTRACE",
    "get_mempolicy": "CAP_SYS_NICE", "mbind": "CAP_SYS_NICE", "set_mempolicy": "CAP_SYS_NICE",
    "set_mempolicy_home_node": "CAP_SYS_NICE",
}
AF_ALG, AF_VSOCK = 38, 40
NETLINK_AUDIT = 9
# clone() without any CLONE_NEW* flag is how threads and fork() are made: always allowed.
CLONE_NS_FLAGS = 0x7E020000
ENOSYS = 38

_SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64",
              "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X"}


def find_profile() -> Path:
    for path in PROFILE_PATHS:
        if path.exists():
            return path
    raise RuntimeFailure("no seccomp profile found at " + " or ".join(map(str, PROFILE_PATHS))
                         + ": install it with `apt-get install golang-github-containers-common`")


@functools.lru_cache(maxsize=8)
def oci_seccomp(capabilities: frozenset[str], profile_path: Path | None = None) -> dict:
    """The OCI seccomp section for a process holding `capabilities` (names like CAP_CHOWN)."""
    profile = json.loads((profile_path or find_profile()).read_text())
    machine = platform.machine()
    go_arch = _GO_ARCH.get(machine, machine)
    scmp = _SCMP_ARCH.get(machine)
    arches = [scmp] if scmp else []
    rules = [_oci_rule(r) for r in profile["syscalls"] if _applies(r, go_arch, capabilities)]
    rules = _without(DENIED, rules)
    if "CAP_SYS_ADMIN" not in capabilities:
        rules = _without_admin_calls(rules)
    rules = _without(frozenset(n for n, cap in CAP_GATED.items() if cap not in capabilities), rules)
    rules = _without(frozenset({"socket"}), rules) + _socket_rules(capabilities)
    out = {"defaultAction": profile["defaultAction"], "architectures": arches, "syscalls": rules}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return out


def _applies(rule: dict, arch: str, caps: frozenset[str]) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if exc.get("arches") and arch in exc["arches"]:
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    return True


def _without(names: frozenset[str], rules: list[dict]) -> list[dict]:
    """The rules with `names` taken out of every allow rule (so the default action denies them)."""
    out = []
    for rule in rules:
        if rule["action"] == "SCMP_ACT_ALLOW":
            kept = [n for n in rule["names"] if n not in names]
            if not kept:
                continue
            rule = {**rule, "names": kept}
        out.append(rule)
    return out


def _without_admin_calls(rules: list[dict]) -> list[dict]:
    out = _without(ADMIN_ONLY, rules)
    out.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0,
                          "op": "SCMP_CMP_MASKED_EQ"}]})
    # glibc falls back to clone() when clone3() says ENOSYS; clone3's flags sit in memory
    # where seccomp cannot see them, so it cannot be filtered by flag.
    out.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    return out


def _socket_rules(capabilities: frozenset[str]) -> list[dict]:
    """socket() for every family but AF_ALG and AF_VSOCK (Docker's rule); without
    CAP_AUDIT_WRITE also not the audit netlink protocol (Podman's rule)."""
    families = [(AF_ALG, "SCMP_CMP_LT"), (AF_ALG + 1, "SCMP_CMP_EQ"), (AF_VSOCK, "SCMP_CMP_GT")]
    rules = []
    for value, op in families:
        args = [{"index": 0, "value": value, "valueTwo": 0, "op": op}]
        if "CAP_AUDIT_WRITE" not in capabilities:
            args.append({"index": 2, "value": NETLINK_AUDIT, "valueTwo": 0, "op": "SCMP_CMP_NE"})
        rules.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": args})
    return rules


def _oci_rule(rule: dict) -> dict:
    out = {"names": rule["names"], "action": rule["action"]}
    if rule.get("args"):
        out["args"] = rule["args"]
    if "errnoRet" in rule:
        out["errnoRet"] = rule["errnoRet"]
    return out
