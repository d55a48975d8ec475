"""The `tumbler` command as a user types it: images, serverless sandboxes, errors."""
from __future__ import annotations

import subprocess
import sys

from checks import IMAGE, leftovers, reap



def tumbler(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tumbler.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_image_ls_lists_the_base_image():
    out = tumbler("image", "ls")
    assert out.returncode == 0 and IMAGE in out.stdout


def test_local_sandbox_life_cycle(runtime):
    made = tumbler("local", "create", "--image", IMAGE, "--memory", "256m")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    inits = [runtime.init_pid(sid)]
    try:
        ran = tumbler("local", "exec", sid, "echo hello; (exit 3)")
        assert (ran.returncode, ran.stdout) == (3, "hello\n")
        assert sid in tumbler("local", "ls").stdout
        assert tumbler("local", "reset", sid).returncode == 0
    finally:
        inits.append(runtime.init_pid(sid))
        assert tumbler("local", "rm", sid).returncode == 0
    # The CLI processes that started the sandbox's inits have exited, so the inits were
    # re-parented to the nearest subreaper, this test process: collect them as pid 1 would.
    for pid in inits:
        reap(pid)
    assert leftovers(runtime, sid) == []


def test_bad_input_says_what_to_fix():
    out = tumbler("local", "create", "--image", "no-such-image")
    assert out.returncode == 2 and "tumbler image build" in out.stderr
    out = tumbler("local", "create", "--memory", "lots")
    assert out.returncode == 2 and "memory" in out.stderr
    out = tumbler("local", "exec", "nosuchsandbox", "true")
    assert out.returncode == 2 and "no sandbox" in out.stderr
