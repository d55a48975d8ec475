"""What a new user meets on a server (issue 22): the reaper with a sandbox removed behind the
server's back, a second server on the same state dir, `tumbler pool resize`."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from checks import IMAGE
from server_process import TOKEN, ServerProcess, free_port, leftovers_after, sweep
from tumbler.sdk import core

DEADLINE_S = 30.0


def wait_for(predicate, timeout_s: float = DEADLINE_S, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def reaping_server(runtime, tmp_path):
    srv = ServerProcess(tmp_path, reap_interval_s=0.3).start()
    client = srv.client()
    yield srv, client
    sweep(client, runtime, client.made)
    client.close()
    assert srv.terminate() in (0, -signal.SIGTERM)


def test_a_vanished_sandbox_does_not_stop_the_reaper(reaping_server, runtime):
    srv, client = reaping_server
    vanished = client.create(IMAGE)
    short = client.create(IMAGE, ttl=1)
    runtime.remove(vanished.id)        # what `tumbler local rm ID` does behind the server's back
    # The vanished one is marked at the next pass, and the TTL of the other keeps working.
    gone = wait_for(lambda: (s := client.send(core.get(vanished.id))).state == "error" and s,
                    what="the vanished sandbox to be marked error")
    assert "gone from the runtime" in gone.error
    wait_for(lambda: short.id not in {s.id for s in client.list()},
             what="the ttl=1 sandbox to be reaped")
    assert leftovers_after(runtime, short.id) == []
    client.send(core.remove(vanished.id))
    assert vanished.id not in {s.id for s in client.list()}
