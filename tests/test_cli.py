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


def test_local_create_options_and_start_after_stop(runtime):
    """Issue 22: create takes --disk/--env/--cwd/--hostname; `local start` brings a stopped
    sandbox back with its files (only `reset`, which wipes them, did)."""
    made = tumbler("local", "create", "--image", IMAGE, "--memory", "256m", "--disk", "64m",
                   "--env", "GREETING=hi there", "--cwd", "/tmp", "--hostname", "box1")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    inits = [runtime.init_pid(sid)]
    try:
        ran = tumbler("local", "exec", sid, "echo $GREETING; pwd; hostname; echo kept > /root/f")
        assert (ran.returncode, ran.stdout) == (0, "hi there\n/tmp\nbox1\n"), ran.stderr
        assert runtime.get(sid).spec.limits.disk == 64 << 20
        assert tumbler("local", "stop", sid).returncode == 0
        stopped = tumbler("local", "exec", sid, "true")
        assert stopped.returncode == 2 and "start it first" in stopped.stderr
        started = tumbler("local", "start", sid)
        assert started.returncode == 0, started.stderr
        inits.append(runtime.init_pid(sid))
        assert tumbler("local", "exec", sid, "cat /root/f").stdout == "kept\n"
    finally:
        inits.append(runtime.init_pid(sid))
        assert tumbler("local", "rm", sid).returncode == 0
    for pid in inits:
        if pid:
            reap(pid)
    assert leftovers(runtime, sid) == []


def test_image_rm_of_a_missing_image_does_not_suggest_building_it():
    out = tumbler("image", "rm", "no-such-image")
    assert out.returncode == 2 and "no image 'no-such-image'" in out.stderr
    assert "build" not in out.stderr and "tumbler image ls" in out.stderr
    bad = tumbler("local", "create", "--env", "NOEQUALS")
    assert bad.returncode == 2 and "--env takes KEY=VALUE" in bad.stderr


def _watchers_of(sandbox_id: str) -> list[int]:
    """Pids of the expiry watchers of `sandbox_id` (python -m tumbler.runtime.expiry ID)."""
    import os
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if b"tumbler.runtime.expiry" in argv and sandbox_id.encode() in argv:
            found.append(int(entry))
    return found


def test_local_create_max_lifetime_removes_it_without_a_server(runtime):
    """Issue 22's leftover: --max-lifetime on a serverless sandbox. Its watcher removes it on
    time; and one whose watcher is gone is removed by the next runtime that opens."""
    import time
    from checks import wait_for
    from tumbler.runtime import expiry
    from tumbler.runtime.process import ProcessRuntime
    from tumbler.runtime.spec import Limits, SandboxSpec
    bad = tumbler("local", "create", "--max-lifetime", "0")
    assert bad.returncode == 2 and "--max-lifetime" in bad.stderr
    made = tumbler("local", "create", "--image", IMAGE, "--memory", "256m", "--max-lifetime", "3")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.strip()
    init, watchers = runtime.init_pid(sid), _watchers_of(sid)
    assert len(watchers) == 1
    listed = tumbler("local", "ls").stdout
    assert sid in listed and " s" in listed.split(sid, 1)[1].splitlines()[0]
    wait_for(lambda: sid not in [i.id for i in runtime.list()], 30, "the watcher to remove it")
    for pid in (init, *watchers):
        reap(pid)
    assert leftovers(runtime, sid) == []
    # No watcher (killed, or a reboot): the next runtime to open removes it past its deadline.
    spec = SandboxSpec(image=IMAGE, limits=Limits(memory="128m"),
                       labels=expiry.labels_for(1, now=time.time() - 2))
    info = runtime.create(spec)
    ProcessRuntime(runtime.paths)
    assert info.id not in [i.id for i in runtime.list()] and leftovers(runtime, info.id) == []
