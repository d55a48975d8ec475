"""A sandbox whose agent dies while the server runs is listed as stopped without any client call.

Two ways the server learns it: the agent hanging up a connection the server holds (at once), and
the reaper's pass over running sandboxes (for sandboxes no client had talked to). Each test kills
the sandbox's init and polls GET until the state changes, with a deadline.
"""
from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from checks import IMAGE
from server_process import ServerProcess, sweep
from tumbler import Sandbox
from tumbler.errors import AgentDied

DEADLINE_S = 30.0
POLL_S = 0.05


@pytest.fixture(scope="module")
def hangup_server(runtime, tmp_path_factory):
    """A server whose reaper never runs in a test: only the agent's hang-up can tell it."""
    srv = ServerProcess(tmp_path_factory.mktemp("server-hangup"), reap_interval_s=3600).start()
    yield srv
    assert srv.terminate() in (0, -signal.SIGTERM)


@pytest.fixture
def hangup_api(hangup_server, runtime):
    client = hangup_server.client()
    yield client
    sweep(client, runtime, client.made)
    client.close()


def wait_not_running(server: ServerProcess, sandbox_id: str) -> dict:
    """GET the sandbox until its state is no longer running; its JSON. Fails after DEADLINE_S."""
    headers = {"authorization": f"Bearer {server.token}"}
    deadline = time.monotonic() + DEADLINE_S
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as http:
        while time.monotonic() < deadline:
            out = http.get(f"/v1/sandboxes/{sandbox_id}").raise_for_status().json()
            if out["state"] != "running":
                return out
            time.sleep(POLL_S)
    pytest.fail(f"sandbox {sandbox_id} still listed as running {DEADLINE_S:g} s after its agent died")


def kill_init(runtime, sandbox_id: str) -> None:
    os.kill(runtime.init_pid(sandbox_id), signal.SIGKILL)


def test_hang_up_marks_it_stopped(hangup_server, hangup_api, runtime):
    sb = Sandbox(IMAGE, client=hangup_api)
    sb.run("echo warm")                      # the server now holds a connection to its agent
    kill_init(runtime, sb.id)
    out = wait_not_running(hangup_server, sb.id)
    assert out["state"] == "stopped" and "agent" in out["error"]
    assert sb.id in [s.id for s in hangup_api.list(state="stopped")]
    with pytest.raises(AgentDied) as caught:  # what a call would have said before the watch saw it
        sb.run("echo hi")
    assert "reset" in caught.value.message
    sb.reset()
    assert sb.state == "running" and sb.run("echo back").output == "back\n"
    assert hangup_api.get(sb.id).info.error is None


def test_reaper_pass_marks_an_idle_one_stopped(server, api, runtime):
    sb = Sandbox(IMAGE, client=api)          # no call yet: the server holds no connection to it
    kill_init(runtime, sb.id)
    out = wait_not_running(server, sb.id)
    assert out["state"] == "stopped" and "agent" in out["error"]
    sb.start()
    assert sb.run("echo up").output == "up\n"
    sb.stop()
    assert api.get(sb.id).info.state == "stopped"


def test_delete_after_death(hangup_server, hangup_api, runtime):
    sb = Sandbox(IMAGE, client=hangup_api)
    sb.run("true")
    kill_init(runtime, sb.id)
    wait_not_running(hangup_server, sb.id)
    sb.remove()
    assert sb.id not in [s.id for s in hangup_api.list()]
