"""The server's CPU policy (`ServerConfig.batch_scheduling`): SCHED_BATCH for the server,
the normal policy for everything inside its sandboxes."""
from __future__ import annotations

import os
import subprocess
import sys

from checks import IMAGE
from tumbler import Sandbox

# /proc/PID/sched's "policy" line: 0 SCHED_OTHER, 3 SCHED_BATCH
POLICIES = "grep -h '^policy' /proc/1/sched /proc/self/sched | awk '{print $3}'"


def _policy(pid: int) -> int:
    return os.sched_getscheduler(pid)


def test_the_server_runs_batch_and_its_sandboxes_do_not(server, api):
    assert _policy(server.proc.pid) == os.SCHED_BATCH
    threads = os.listdir(f"/proc/{server.proc.pid}/task")
    assert len(threads) > 1 and all(_policy(int(t)) == os.SCHED_BATCH for t in threads)
    sb = Sandbox(IMAGE, client=api)
    # The agent (pid 1 inside) and what it starts (the session's bash, its command)
    assert sb.run(POLICIES).output.split() == ["0", "0"]
    assert sb.exec(["sh", "-c", POLICIES]).stdout.split() == ["0", "0"]


def test_a_sandbox_started_under_batch_runs_normal(runtime):
    """LocalSandbox made by a SCHED_BATCH process (as the server's runc is): the agent sets
    itself back at start, before any program of the sandbox runs."""
    code = ("import os; from tumbler import LocalSandbox; "
            "os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0)); "
            f"sb = LocalSandbox({IMAGE!r}); "
            f"print(sb.run({POLICIES!r}).output.split(), os.sched_getscheduler(0)); sb.remove()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.split("]")[0] + "]" == "['0', '0']"
    assert out.split("]")[1].strip() == str(os.SCHED_BATCH)


def test_batch_scheduling_can_be_turned_off(tmp_path):
    from server_process import ServerProcess
    srv = ServerProcess(tmp_path, batch_scheduling=False).start()
    try:
        assert _policy(srv.proc.pid) == os.SCHED_OTHER
    finally:
        srv.terminate()
