"""`tumbler sandbox` and `tumbler pool` against a real server, as a user types them."""
from __future__ import annotations

import os
import subprocess
import sys

from server_process import TOKEN


def tumbler(server, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUMBLER_URL": server.url, "TUMBLER_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "tumbler.cli", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def test_sandbox_commands_through_the_server(server, api, tmp_path):
    made = tumbler(server, "sandbox", "create", "--memory", "256m", "--label", "who=cli")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.split()[-1]
    api.made.append(sid)
    ran = tumbler(server, "sandbox", "exec", sid, "echo hi; (exit 4)")
    assert (ran.returncode, ran.stdout) == (4, "hi\n")
    (tmp_path / "f.txt").write_text("payload")
    assert tumbler(server, "sandbox", "cp", str(tmp_path / "f.txt"), f"{sid}:/root/f.txt").returncode == 0
    assert tumbler(server, "sandbox", "exec", sid, "cat /root/f.txt").stdout == "payload"
    assert sid in tumbler(server, "sandbox", "ls", "--label", "who=cli").stdout
    assert tumbler(server, "sandbox", "rm", sid).returncode == 0


def test_pool_commands(server, api):
    made = tumbler(server, "pool", "resize", "cli-pool", "0", "--memory", "128m")
    assert made.returncode == 0, made.stderr
    assert "cli-pool" in tumbler(server, "pool", "ls").stdout
    assert tumbler(server, "pool", "rm", "cli-pool").returncode == 0
    missing = tumbler(server, "pool", "rm", "cli-pool")
    assert missing.returncode == 2 and "no pool" in missing.stderr


def test_node_ls_shows_this_node_and_its_backend(server, api):
    [node] = api.nodes()
    assert (node.state, node.backend) == ("alive", "process")   # single node: the runc jail
    shown = tumbler(server, "node", "ls")
    assert shown.returncode == 0, shown.stderr
    assert "alive" in shown.stdout and "process" in shown.stdout


def test_wrong_token_is_refused(server):
    env = {**os.environ, "TUMBLER_URL": server.url, "TUMBLER_TOKEN": "wrong"}
    out = subprocess.run([sys.executable, "-m", "tumbler.cli", "sandbox", "ls"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 2 and "token" in out.stderr.lower()


def test_pool_resize_changes_the_size_only(server, api):
    """Issue 22: resize kept the CLI's defaults (512m, debian) over the pool's own spec, and a
    resize to 0 answered with the state before it."""
    import time
    from tumbler.runtime.spec import parse_bytes
    api.set_pool("resized", 1, "debian", memory="256m", cpus=0.5)
    try:
        deadline = time.monotonic() + 30
        while next(p for p in api.pools() if p.name == "resized").ready < 1:
            assert time.monotonic() < deadline, "the pool did not fill in 30 s"
            time.sleep(0.05)
        grown = tumbler(server, "pool", "resize", "resized", "2")
        assert grown.returncode == 0, grown.stderr
        pool = next(p for p in api.pools() if p.name == "resized")
        assert pool.size == 2
        assert pool.spec.limits.memory == parse_bytes("256m")
        assert pool.spec.limits.cpus == 0.5
        assert pool.ready >= 1  # the sandbox already waiting was kept, not replaced
        emptied = tumbler(server, "pool", "resize", "resized", "0")
        assert emptied.returncode == 0, emptied.stderr
        assert "0/0 ready" in emptied.stdout, emptied.stdout
        assert next(p for p in api.pools() if p.name == "resized").ready == 0
    finally:
        api.remove_pool("resized")


def test_create_options_start_and_the_dead_agent_fix(server, api, runtime):
    """Issue 22: `sandbox create` takes --disk/--env/--cwd/--hostname/--max-lifetime; a sandbox
    whose agent died says which command fixes it, and `sandbox start` brings it back with its
    files."""
    import os
    import signal
    import time
    from tumbler.sdk import core
    made = tumbler(server, "sandbox", "create", "--memory", "256m", "--disk", "64m",
                   "--env", "GREETING=hi there", "--cwd", "/tmp", "--hostname", "box2",
                   "--max-lifetime", "600")
    assert made.returncode == 0, made.stderr
    sid = made.stdout.split()[-1]
    api.made.append(sid)
    ran = tumbler(server, "sandbox", "exec", sid, "echo $GREETING; pwd; hostname; echo kept > /root/f")
    assert (ran.returncode, ran.stdout) == (0, "hi there\n/tmp\nbox2\n"), ran.stderr
    record = api.send(core.get(sid))
    assert record.spec.limits.disk == 64 << 20 and record.expires_at is not None
    os.kill(runtime.init_pid(sid), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while api.send(core.get(sid)).state == "running":
        assert time.monotonic() < deadline, "the dead agent was not noticed in 30 s"
        time.sleep(0.05)
    dead = tumbler(server, "sandbox", "exec", sid, "true")
    assert dead.returncode == 2
    assert f"tumbler sandbox start {sid}" in " ".join(dead.stderr.split()), dead.stderr
    started = tumbler(server, "sandbox", "start", sid)
    assert started.returncode == 0, started.stderr
    assert tumbler(server, "sandbox", "exec", sid, "cat /root/f").stdout == "kept\n"
    assert tumbler(server, "sandbox", "rm", sid).returncode == 0
