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
