"""The agent runs on code the sandbox cannot change (issue 23, item 1): its interpreter, stdlib
and package come from a read-only mount of ours at /.tumbler, so root inside editing the image's
python3 and stdlib, or trying to replace /.tumbler, changes nothing the agent runs; it is
non-dumpable, so it cannot be traced; and it runs in an image with no python3 and no glibc."""
from __future__ import annotations

import pytest

from checks import IMAGE, busybox_tar
from tumbler.runtime.spec import SandboxSpec

pytestmark = [pytest.mark.security]

MARK = "/tmp/agent-was-taken-over"
# Root inside appends a payload to every stdlib module the agent used to import on first use,
# and replaces the image's python3 with a forger that answers "ALL TESTS PASSED".
TAMPER = f"""
set -e
payload='import os as _o; open("{MARK}", "a").write("x")'
for m in subprocess.py tarfile.py shutil.py lzma.py logging/__init__.py http/server.py json/__init__.py; do
  echo "$payload" >> /usr/lib/python3.11/$m
done
rm -rf /usr/lib/python3.11/__pycache__ /usr/lib/python3.11/*/__pycache__
printf '#!/bin/sh\\necho ALL TESTS PASSED\\nexit 0\\n' > /usr/bin/python3.11
echo tampered
"""


def _agent_is_ours(sb) -> None:
    assert sb.exec(["/bin/false"]).exit_code == 1
    sb.run("mkdir -p /root/d && echo data > /root/d/f")
    return None


def test_a_tampered_image_python_does_not_reach_the_agent(make_sandbox, tmp_path):
    sb = make_sandbox()
    assert sb.run(TAMPER).output.strip().endswith("tampered")
    assert sb.exec(["python3", "-c", "pass"]).stdout == "ALL TESTS PASSED\n"   # the image's is forged
    assert sb.exec(["/bin/false"]).exit_code == 1                               # the agent's is not
    sb.run("mkdir -p /root/d && echo data > /root/d/f")
    sb.download("/root/d", tmp_path / "d")                                      # tar code: ours
    assert (tmp_path / "d" / "f").read_text() == "data\n"
    sb.upload(tmp_path / "d", "/root/up")
    sb.call("model.enable", {"port": 0}, timeout=30)                            # http.server: ours
    sb.call("model.disable", {}, timeout=30)
    assert sb.exec(["sh", "-c", f"test -e {MARK} && echo found || echo clean"]).stdout == "clean\n"


def test_the_agents_mount_cannot_be_renamed_or_written(make_sandbox):
    sb = make_sandbox()
    r = sb.exec(["sh", "-c", "mv /.tumbler /tumbler-old; echo rc=$?; mkdir -p /x && "
                             "touch /.tumbler/agent/evil.py; echo rc=$?; "
                             "mount -o remount,rw /.tumbler; echo rc=$?"])
    assert "Device or resource busy" in r.stderr and "Read-only file system" in r.stderr, r
    assert r.stdout.count("rc=0") == 0, r.stdout
    cmdline = sb.read_bytes("/proc/1/cmdline").split(b"\0")
    assert cmdline[0] == b"/.tumbler/py/lib/ld-linux-x86-64.so.2"       # not the image's python3
    assert sb.exec(["sh", "-c", "cat /proc/1/environ >/dev/null 2>&1 || echo denied"]).stdout == "denied\n"


def test_a_snapshot_of_a_tampered_sandbox_still_runs_our_agent(make_sandbox, runtime):
    sb = make_sandbox()
    sb.run(TAMPER)
    name = f"tampered-{sb.id}"
    sb.snapshot(name)
    try:
        child = make_sandbox(spec=SandboxSpec(image=name))
        assert child.exec(["python3", "-c", "pass"]).stdout == "ALL TESTS PASSED\n"
        assert child.exec(["/bin/false"]).exit_code == 1                 # "verify" cannot be forged
        assert child.exec(["sh", "-c", f"test -e {MARK} && echo found || echo clean"]).stdout == "clean\n"
        child.remove()
    finally:
        runtime.images.remove(name)


def test_an_image_without_python_or_glibc_runs(make_sandbox, runtime, tmp_path):
    tar = tmp_path / "busybox.tar"
    tar.write_bytes(busybox_tar())
    name = f"busybox-{tmp_path.name[-8:]}".replace("_", "-")
    runtime.images.import_tar(name, tar, force=True)
    try:
        sb = make_sandbox(spec=SandboxSpec(image=name, cwd="/root"))
        assert not sb.exec(["sh", "-c", "ls /usr/bin/python3 /lib/x86_64-linux-gnu/libc.so.6 "
                                        "2>/dev/null; echo $?"]).stdout.startswith("/")
        r = sb.exec(["sh", "-c", "echo hello from busybox; false"])
        assert (r.stdout, r.exit_code) == ("hello from busybox\n", 1)
        from tumbler.errors import InvalidRequest
        with pytest.raises(InvalidRequest, match="no /bin/bash"):   # sessions need bash; said so
            sb.run("echo hi")
        sb.write_file("/root/a.txt", "x")
        assert sb.read_file("/root/a.txt") == "x"
        sb.remove()
    finally:
        runtime.images.remove(name)


def test_the_image_python_still_runs_for_the_user(make_sandbox):
    """What programs inside see is the image's own: no loader path or PYTHON* of ours leaks."""
    sb = make_sandbox(spec=SandboxSpec(image=IMAGE))
    r = sb.exec(["python3", "-c", "import os, sys; print(sys.executable, sys.prefix); "
                                  "print(sorted(k for k in os.environ if k.startswith(('LD_', 'PYTHON'))))"])
    assert r.stdout == "/usr/bin/python3 /usr\n[]\n", r


PRELOAD_LIB = r'''
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    FILE *f = fopen(getpid() == 1 ? "/tmp/preloaded-into-pid1" : "/tmp/preloaded-into-user", "a");
    if (f) { fputs("x", f); fclose(f); }
}
'''


def test_ld_so_preload_written_inside_never_loads_into_the_agent(make_sandbox, runtime, tmp_path):
    """/etc/ld.so.preload is read by every dynamic start: our loader reads ours instead, so a
    library planted there (and carried by a snapshot) never runs in an agent."""
    import shutil
    import subprocess
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc on the host to build the planted library")
    (tmp_path / "evil.c").write_text(PRELOAD_LIB)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "evil.so"),
                    str(tmp_path / "evil.c")], check=True, timeout=60)
    sb = make_sandbox()
    sb.write_file("/usr/local/lib/evil.so", (tmp_path / "evil.so").read_bytes())
    sb.run("echo /usr/local/lib/evil.so > /etc/ld.so.preload && /bin/true")
    # It works on the image's programs (so this test can fail): the user's loader loads it.
    assert sb.exec(["sh", "-c", "cat /tmp/preloaded-into-user"]).exit_code == 0
    name = f"preload-{sb.id}"
    sb.snapshot(name)
    try:
        child = make_sandbox(spec=SandboxSpec(image=name))
        assert child.exec(["/bin/false"]).exit_code == 1
        r = child.exec(["sh", "-c", "test -e /tmp/preloaded-into-pid1 && echo loaded || echo clean"])
        assert r.stdout == "clean\n"
        child.remove()
    finally:
        runtime.images.remove(name)


def test_the_agent_cannot_be_traced_and_its_children_work(make_sandbox):
    sb = make_sandbox()
    probe = ("import ctypes, errno, os\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "r = libc.ptrace(0x4206, 1, 0, 0)\n"          # PTRACE_SEIZE
             "print('seize', 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()])\n"
             "try:\n    open('/proc/1/mem', 'rb').close(); print('mem ok')\n"
             "except OSError as e:\n    print('mem', errno.errorcode[e.errno])\n"
             "print('me', open('/proc/self/status').read().count('Name'))\n")
    r = sb.exec(["python3", "-c", probe])
    assert r.stdout.splitlines()[:2] == ["seize EPERM", "mem EACCES"], r
    # The agent's children are dumpable again (execve resets it): a session can trace its own.
    r = sb.exec(["sh", "-c", "sleep 30 & python3 -c \"import ctypes,sys; l=ctypes.CDLL(None, use_errno=True); "
                             "print(l.ptrace(0x4206, int(sys.argv[1]), 0, 0))\" $!; kill $!"])
    assert r.stdout == "0\n", r


# -- the docker backend: the same runtime, mounted through the engine -------------------------

@pytest.fixture(scope="module")
def docker_rt():
    from test_backends import _docker_runtime
    return _docker_runtime()


@pytest.fixture
def docker_sandboxes(docker_rt):
    from checks import docker_leftovers, remove_all_and_check
    made = []
    yield made
    remove_all_and_check(made, lambda sid: docker_leftovers(docker_rt, sid))


def test_docker_a_tampered_image_python_does_not_reach_the_agent(docker_rt, docker_sandboxes,
                                                                 tmp_path):
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(runtime=docker_rt, spec=SandboxSpec(image=IMAGE))
    docker_sandboxes.append(sb)
    assert sb.run(TAMPER).output.strip().endswith("tampered")
    assert sb.exec(["python3", "-c", "pass"]).stdout == "ALL TESTS PASSED\n"
    assert sb.exec(["/bin/false"]).exit_code == 1
    sb.run("mkdir -p /root/d && echo data > /root/d/f")
    sb.download("/root/d", tmp_path / "d")
    assert (tmp_path / "d" / "f").read_text() == "data\n"
    r = sb.exec(["sh", "-c", "mv /.tumbler /tumbler-old; touch /.tumbler/agent/evil.py; "
                             "cat /proc/1/environ > /dev/null"])
    assert "Device or resource busy" in r.stderr and "Read-only file system" in r.stderr, r
    assert "Permission denied" in r.stderr, r
    assert sb.exec(["sh", "-c", f"test -e {MARK} && echo found || echo clean"]).stdout == "clean\n"
    name = f"localhost/tampered-{sb.id}"
    sb.snapshot(name)
    try:
        child = LocalSandbox(runtime=docker_rt, spec=SandboxSpec(image=name))
        docker_sandboxes.append(child)
        assert child.exec(["python3", "-c", "pass"]).stdout == "ALL TESTS PASSED\n"
        assert child.exec(["/bin/false"]).exit_code == 1
    finally:
        for s in list(docker_sandboxes):
            s.remove()
        docker_sandboxes.clear()
        docker_rt.api.remove_image(name, force=True)
