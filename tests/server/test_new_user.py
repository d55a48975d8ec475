"""What a new user meets on a server (issue 22): the reaper with a sandbox removed behind the
server's back, a second server on the same state dir, `tumbler pool resize`."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from checks import IMAGE, wait_for
from server_process import ServerProcess, free_port, leftovers_after, sweep
from tumbler.sdk import core


@pytest.fixture
def reaping_server(runtime, tmp_path):
    srv = ServerProcess(tmp_path, reap_interval_s=0.3).start()
    client = srv.client()
    try:
        yield srv, client
        sweep(client, runtime, client.made)
    finally:   # a failed sweep must not leave the server running after the test
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


def pooled_ids(runtime) -> set[str]:
    from tumbler.server.pools import POOL_LABEL
    return {i.id for i in runtime.list() if POOL_LABEL in i.spec.labels}


def ready(client, name: str) -> int:
    return next((p.ready for p in client.pools() if p.name == name), 0)


def test_a_second_server_on_the_same_state_dir_is_refused(runtime, tmp_path):
    first = ServerProcess(tmp_path, pools=[{"name": "warm", "size": 2}]).start()
    client = first.client()
    try:
        wait_for(lambda: ready(client, "warm") == 2, what="the pool to fill")
        waiting = pooled_ids(runtime)
        port = free_port()
        second = subprocess.Popen(
            [sys.executable, "-m", "tumbler.cli", "serve", "--state-dir", str(tmp_path),
             "--port", str(port), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, errs = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.terminate()
            second.communicate(timeout=30)
            pytest.fail("a second server started on a state dir a live server holds")
        assert second.returncode == 2, errs
        assert f"pid {first.proc.pid}" in errs and f":{first.config['port']}" in errs, errs
        assert "--state-dir" in errs, errs
        # The first server's pool is untouched and hands out live sandboxes.
        assert waiting <= pooled_ids(runtime)
        assert ready(client, "warm") == 2
        sb = client.create(IMAGE)
        assert sb.id in waiting
        assert sb.run("echo alive").output == "alive\n"
    finally:
        sweep(client, runtime, client.made)
        client.close()
        assert first.terminate() in (0, -signal.SIGTERM)
