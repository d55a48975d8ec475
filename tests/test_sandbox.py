"""Real sandboxes (runc + overlay + cgroups + the in-sandbox agent), used as a user would."""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from checks import IMAGE, leftovers
from tumbler.errors import (AgentDied, AlreadyExists, Conflict, InvalidRequest, NotFound)
from tumbler.runtime import idmap


def test_session_keeps_state_and_exact_output(sandbox):
    assert sandbox.run("echo hi").output == "hi\n"
    sandbox.run("cd /tmp && export GREETING=hello && f() { echo f:$1; }")
    r = sandbox.run("echo $GREETING $PWD; f x; (exit 7)")
    assert r.output == "hello /tmp\nf:x\n"
    assert r.exit_code == 7
    r = sandbox.run("printf 'a\\xffb'")
    assert r.output_bytes == b"a\xffb"


def test_sessions_are_independent(sandbox):
    a = sandbox.session("a")
    b = sandbox.session("b")
    a.run("cd /etc")
    assert b.run("pwd").output == "/root\n"
    assert a.run("pwd").output == "/etc\n"
    with pytest.raises(AlreadyExists):
        sandbox.session("a")
    a.close()
    with pytest.raises(NotFound, match="'a'"):
        a.run("true")
    b.run("exit 3")
    with pytest.raises(Conflict, match="ended"):
        b.run("true")


def test_timeout_interrupts_and_session_survives(sandbox):
    r = sandbox.run("sleep 30", timeout=0.5)
    assert r.timed_out
    assert sandbox.run("echo alive").output == "alive\n"


def test_exec_one_shot(sandbox):
    r = sandbox.exec(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in")
    assert (r.stdout, r.stderr, r.exit_code) == ("in", "err\n", 3)
    r = sandbox.exec("echo $X $PWD", env={"X": "1"}, cwd="/tmp")
    assert r.stdout == "1 /tmp\n"


def test_root_inside_is_unprivileged_outside(sandbox, runtime):
    assert sandbox.run("id -u").output == "0\n"
    sandbox.run("echo x > /root/owned")
    st = os.stat(runtime.upper_dir(sandbox.id) / "root" / "owned")
    assert st.st_uid == idmap.HOST_BASE
    # root inside can still do root things to its own files
    assert sandbox.run("useradd -m alice && chown alice /root/owned && stat -c %U /root/owned").output == "alice\n"


def test_isolation_pids_files_network(sandbox):
    ps = sandbox.run("ps -eo pid= | wc -l").output
    assert int(ps) < 10  # only the sandbox's own processes
    assert sandbox.run(f"test -e /proc/{os.getpid()}/cmdline && echo seen || echo unseen").output != "seen\n" \
        or os.getpid() < 10
    assert sandbox.run("ls /work /var/lib/tumbler 2>&1; echo $?").output.strip().endswith("2")
    assert sandbox.run("ls /sys/class/net").output.split() == ["lo"]
    routes = sandbox.read_file("/proc/net/route").splitlines()
    assert routes[1:] == []  # no route anywhere: network off
    assert sandbox.run("hostname").output == "sandbox\n"


def test_image_is_never_written(make_sandbox):
    a = make_sandbox()
    a.run("rm -f /usr/bin/git; echo evil > /etc/motd")
    b = make_sandbox()
    assert b.run("test -x /usr/bin/git && cat /etc/motd | grep -c evil").output == "0\n"


def test_memory_hog_is_killed_by_its_own_limit(make_sandbox):
    sb = make_sandbox(memory="64m")
    r = sb.run("python3 -c 'x = bytearray(256 << 20); print(len(x))'", timeout=60)
    assert r.exit_code == 137  # SIGKILL from the OOM killer
    assert sb.run("echo still here").output == "still here\n"


def test_fork_bomb_is_contained(make_sandbox):
    bomb = make_sandbox(pids=64)
    neighbour = make_sandbox()
    r = bomb.run("bomb() { bomb | bomb & }; bomb; sleep 2; echo done", timeout=20)
    assert neighbour.run("echo fine").output == "fine\n"
    assert bomb.stats().pids <= 64
    bomb.remove()  # and nothing is left of it: checked by the fixture


def test_reset_returns_to_pristine(sandbox):
    sandbox.write_file("/root/note", "x")
    sandbox.run("sleep 1000 &")
    sandbox.reset()
    assert sandbox.run("ls /root/note 2>/dev/null; pgrep sleep; echo end").output == "end\n"
    assert sandbox.sessions() and [s["name"] for s in sandbox.sessions()] == ["default"]


def test_snapshot_becomes_an_image(make_sandbox, runtime):
    a = make_sandbox()
    a.run("echo saved > /root/state && rm /etc/motd")
    name = f"snap-{a.id}"
    a.snapshot(name)
    try:
        b = make_sandbox(image=name)
        assert b.run("cat /root/state; test -e /etc/motd || echo gone").output == "saved\ngone\n"
        b.remove()
    finally:
        runtime.images.remove(name)


def test_files_round_trip(sandbox, tmp_path):
    sandbox.write_file("/tmp/d/a.bin", b"\x00\xff" * 10)
    assert sandbox.read_bytes("/tmp/d/a.bin") == b"\x00\xff" * 10
    assert sandbox.stat("/tmp/d/a.bin").size == 20
    (tmp_path / "up" / "sub").mkdir(parents=True)
    (tmp_path / "up" / "sub" / "f.txt").write_text("tree")
    sandbox.upload(tmp_path / "up", "/srv/up")
    assert sandbox.run("cat /srv/up/sub/f.txt").output == "tree"
    sandbox.download("/srv/up", tmp_path / "down")
    assert (tmp_path / "down" / "sub" / "f.txt").read_text() == "tree"
    with pytest.raises(NotFound):
        sandbox.read_file("/no/such/file")


def test_processes_list_and_signal(sandbox):
    sandbox.run("sleep 1000 &")
    procs: list = []
    for _ in range(100):  # the background child may not have exec'd sleep yet
        procs = [p for p in sandbox.processes() if p.cmd.startswith("sleep")]
        if procs:
            break
        time.sleep(0.02)
    assert len(procs) == 1
    sandbox.kill(procs[0].pid, "KILL")
    time.sleep(0.2)
    assert not [p for p in sandbox.processes() if p.cmd.startswith("sleep") and p.state != "Z"]


def test_stats(sandbox):
    st = sandbox.stats()
    assert st.memory_bytes > 0 and st.pids >= 1
    assert st.memory_limit_bytes == 512 << 20


def test_killed_agent_gives_clear_error_and_no_leak(sandbox, runtime):
    sandbox.run("sleep 1000 & echo started")
    os.kill(runtime.init_pid(sandbox.id), signal.SIGKILL)
    time.sleep(0.1)
    with pytest.raises(AgentDied, match="reset or restart"):
        sandbox.run("echo hi")
    sandbox.reset()
    assert sandbox.run("echo back").output == "back\n"


def test_removed_sandbox_leaves_nothing(runtime):
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(image=IMAGE, runtime=runtime)
    sb.run("sleep 1000 & nohup sleep 1000 >/dev/null 2>&1 & setsid sleep 1000 & echo x > /tmp/x")
    sid = sb.id
    sb.remove()
    assert leftovers(runtime, sid) == []


def test_bad_input_names_the_fix(runtime):
    from tumbler.local import LocalSandbox
    with pytest.raises(NotFound, match="tumbler image build"):
        LocalSandbox(image="no-such-image", runtime=runtime)
    with pytest.raises(InvalidRequest, match="memory"):
        LocalSandbox(image=IMAGE, memory="lots", runtime=runtime)
    with pytest.raises(InvalidRequest, match="network"):
        LocalSandbox(image=IMAGE, network="bridge", runtime=runtime)


def test_many_sandboxes_at_once(make_sandbox):
    with ThreadPoolExecutor(8) as pool:
        boxes = list(pool.map(lambda i: make_sandbox(hostname=f"box{i}"), range(12)))
        names = list(pool.map(lambda sb: sb.run("hostname").output.strip(), boxes))
    assert names == [f"box{i}" for i in range(12)]


def test_image_import_from_tar(runtime, tmp_path):
    import subprocess
    from tumbler.local import LocalSandbox
    tar = tmp_path / "rootfs.tar"
    layer = runtime.images.get(IMAGE).layer
    subprocess.run(["tar", "--numeric-owner", "-cf", str(tar), "-C", str(layer), "."], check=True)
    name = "imported-test"
    runtime.images.import_tar(name, tar, force=True)
    try:
        with LocalSandbox(image=name, runtime=runtime) as sb:
            assert sb.run("cat /etc/debian_version").exit_code == 0
        with pytest.raises(AlreadyExists):
            runtime.images.import_tar(name, tar)
    finally:
        runtime.images.remove(name)


def test_half_made_sandbox_dirs_are_swept_at_start(runtime):
    """A process killed between the steps of a create leaves a dir with no record: the next
    runtime removes it once it is old enough not to be someone's create in progress."""
    from tumbler.runtime.process import ProcessRuntime
    old = runtime.paths.sandboxes / "halfmadeold1"
    young = runtime.paths.sandboxes / "halfmadenew1"
    for d in (old, young):
        (d / "layer").mkdir(parents=True)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    try:
        ProcessRuntime(runtime.paths)
        assert not old.exists() and young.exists()
    finally:
        import shutil
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(young, ignore_errors=True)


def test_a_create_whose_process_died_is_swept_at_once(runtime):
    """A server SIGKILLed mid-create left a young dir with no record, which the 60 s grace kept
    past the restart (the chaos test saw it). The dir names its creator: a dead one's create is
    over, whatever its age; a live one's (a create in progress) is left alone."""
    import subprocess
    import sys
    from tumbler.runtime import owners
    from tumbler.runtime.process import CREATOR, ProcessRuntime
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = f"{child.pid}:{owners._start_time(child.pid)}"
    child.kill()
    child.wait(10)
    cut, cut2, busy = (runtime.paths.sandboxes / n for n in ("cutshort1", "cutshort2", "increate1"))

    def half_made(d, creator):
        (d / "layer").mkdir(parents=True)
        (d / CREATOR).write_text(creator)
    half_made(cut, dead)
    half_made(busy, owners.this_process())
    try:
        ProcessRuntime(runtime.paths)
        assert not cut.exists() and busy.exists()
        half_made(cut2, dead)                      # found by a remove, not a sweep
        with pytest.raises(NotFound):
            runtime.remove("cutshort2")
        assert not cut2.exists()
        with pytest.raises(NotFound):
            runtime.remove("increate1")
        assert busy.exists()
    finally:
        import shutil
        for d in (cut, cut2, busy):
            shutil.rmtree(d, ignore_errors=True)


def test_exit_in_the_default_session_gives_a_fresh_one(sandbox):
    """`exit 3` used to leave every later run raising Conflict for the life of the sandbox."""
    sandbox.run("export KEPT=1")
    r = sandbox.run("exit 3")
    assert (r.exit_code, r.session_alive) == (3, False)
    r = sandbox.run("echo ${KEPT:-fresh} $PWD")
    assert (r.output, r.exit_code, r.session_alive) == ("fresh /root\n", 0, True)
    with sandbox.session("named") as s:          # named sessions stay the caller's to renew
        assert s.run("exit 4").session_alive is False
        with pytest.raises(Conflict, match="has ended"):
            s.run("true")


def test_sandboxes_of_a_killed_owner_go_with_the_next_runtime(runtime, tmp_path):
    """A test run killed mid-suite left 34 sandboxes running; now whoever opens the runtime
    next removes those whose owner died (SIGKILL included), and keeps the ones made to last."""
    import subprocess
    import sys
    script = ("import os, signal, sys\nfrom tumbler import LocalSandbox\n"
              f"a = LocalSandbox(image={IMAGE!r})\nb = LocalSandbox(image={IMAGE!r}, keep=True)\n"
              "print(a.id, b.id, flush=True)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphan, kept = proc.stdout.split()
    try:
        assert runtime.get(orphan).state.value == "running"
        type(runtime)(runtime.paths)          # the next process to open the runtime, in effect
        with pytest.raises(NotFound):
            runtime.get(orphan)
        assert leftovers(runtime, orphan) == []
        assert runtime.get(kept).state.value == "running"
    finally:
        runtime.remove(kept)
        try:
            runtime.remove(orphan)
        except NotFound:
            pass
