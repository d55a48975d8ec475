"""The escape suite's system-call attempts and jail checks against the docker backend (Podman's
Docker-API service here): the same probe as test_escapes.py, in a container made by
DockerRuntime with its defaults (our seccomp profile, no userns). Skipped where no engine runs.
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
def docker_sandbox():
    from test_backends import _docker_runtime
    from tumbler.local import LocalSandbox
    rt = _docker_runtime()
    sb = LocalSandbox(runtime=rt, image=IMAGE)
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
    # Stated plainly, and checked so the docs stay true: without userns=True root inside IS
    # host root (uid 0 maps to 0). Only the layers above keep it in.
    assert f["uid_map"] == ["0", "0", "4294967295"]


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
