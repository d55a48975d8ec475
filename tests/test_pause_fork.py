"""Pause/resume (the cgroup freezer) and fork (copies of a running sandbox's files) on this host."""
from __future__ import annotations

import time

import pytest

from checks import leftovers, remove_all_and_check, wait_for
from tumbler.errors import Conflict
from tumbler.runtime.owners import OWNER_LABEL, this_process

SPIN = "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &"


def test_paused_sandbox_uses_no_cpu_and_keeps_its_processes(sandbox):
    sandbox.run("export KEPT=yes")
    sandbox.run(SPIN)
    time.sleep(0.3)
    pids_before = sorted(p.pid for p in sandbox.processes())
    sandbox.pause()
    assert sandbox.info.state == "paused"
    cpu0 = sandbox.stats().cpu_seconds
    time.sleep(1.0)
    assert sandbox.stats().cpu_seconds - cpu0 < 0.01   # a spinning loop, frozen
    assert sandbox.stats().memory_bytes > 0
    with pytest.raises(Conflict, match="paused"):
        sandbox.pause()
    sandbox.resume()
    cpu0 = sandbox.stats().cpu_seconds                 # the same loop goes on
    wait_for(lambda: sandbox.stats().cpu_seconds - cpu0 > 0.05, 30, "the loop to run again")
    assert sorted(p.pid for p in sandbox.processes()) == pids_before
    assert sandbox.run("echo $KEPT").output == "yes\n"   # the bash session lived through it
    with pytest.raises(Conflict, match="not paused|running"):
        sandbox.resume()


def test_a_shell_that_forks_all_the_time_is_always_frozen(sandbox):
    """dash starts each command with vfork; on the v1 freezer a parent that begins its vfork
    wait just after the freezer asked it to freeze is never asked again unless asked anew, and
    the pause used to time out (about 1 in 80 pauses of this loop)."""
    sandbox.run("nohup sh -c 'while :; do mkdir -p /tmp/d; echo 1 > /tmp/d/f; done' "
                ">/dev/null 2>&1 &")
    for _ in range(300):
        sandbox.pause()
        sandbox.resume()
    assert sandbox.run("ls /tmp/d").output == "f\n"   # the loop ran and was never stuck


def test_paused_sandbox_stops_and_removes_cleanly(make_sandbox, runtime):
    sb = make_sandbox()
    sb.run(SPIN)
    sb.pause()
    with pytest.raises(Conflict, match="resume it"):
        sb.runtime.start(sb.id)
    sb.stop()                               # frozen processes still die
    wait_for(lambda: sb.stats().pids == 0, 30, "the frozen processes to go")
    sb.start()
    sb.pause()
    sb.remove()
    assert leftovers(runtime, sb.id) == []


def test_fork_copies_files_not_processes(sandbox, runtime):
    sandbox.write_file("/root/state.txt", "prepared")
    sandbox.run("mkdir -p /srv/repo && cd /srv/repo && seq 1 1000 > numbers")
    sandbox.run(SPIN)
    kids = sandbox.fork(3, labels={"group": "g1"})
    try:
        assert len({k.id for k in kids}) == 3 and sandbox.id not in {k.id for k in kids}
        for i, kid in enumerate(kids):
            assert kid.info.state == "running"
            assert kid.info.spec.labels["group"] == "g1"
            assert kid.read_file("/root/state.txt") == "prepared"
            assert kid.run("wc -l < /srv/repo/numbers").output == "1000\n"
            assert not [p for p in kid.processes() if "while" in p.cmd]   # files only
            kid.write_file("/root/state.txt", f"kid {i}")
        # Each its own copy: writes in one are seen by no other, the source included.
        assert [k.read_file("/root/state.txt") for k in kids] == ["kid 0", "kid 1", "kid 2"]
        assert sandbox.read_file("/root/state.txt") == "prepared"
        assert sandbox.run("echo alive").output == "alive\n"   # the source runs on
    finally:
        remove_all_and_check(kids, lambda sid: leftovers(runtime, sid))


def test_fork_of_a_paused_sandbox_keeps_it_paused(sandbox, runtime):
    sandbox.write_file("/root/a", "x")
    sandbox.pause()
    kids = sandbox.fork(1)
    try:
        assert runtime.get(sandbox.id).state == "paused"
        assert kids[0].read_file("/root/a") == "x"
    finally:
        remove_all_and_check(kids, lambda sid: leftovers(runtime, sid))
    sandbox.resume()


def test_fork_of_a_stopped_sandbox_is_refused_and_leaves_nothing(sandbox, runtime):
    def ours():   # other test runs share the runtime: count only this process's sandboxes
        return {i.id for i in runtime.list() if i.spec.labels.get(OWNER_LABEL) == this_process()}
    sandbox.stop()
    before = ours()
    with pytest.raises(Conflict, match="start it first"):
        sandbox.fork(2)
    assert ours() == before
