"""Admission by node budget, the TTL reaper, restart survival and graceful shutdown."""
from __future__ import annotations

import os
import secrets
import time

import pytest

from checks import IMAGE, leftovers
from server_process import ServerProcess, leftovers_after, reap, sweep
from tumbler import Sandbox
from tumbler.errors import AgentDied, CapacityExceeded, NotFound, ServerUnreachable


@pytest.fixture(scope="module")
def tight_server(runtime, tmp_path_factory):
    """A server with room for two 256 MiB sandboxes and a reaper pass every 0.2 s."""
    srv = ServerProcess(tmp_path_factory.mktemp("tight"), node_memory_bytes=600 << 20,
                        reap_interval_s=0.2).start()
    yield srv
    srv.terminate()


@pytest.fixture
def tight(tight_server, runtime):
    client = tight_server.client()
    yield client
    sweep(client, runtime, client.made)
    client.close()


def test_capacity_429_then_room_again(tight):
    a = Sandbox(IMAGE, client=tight, memory="256m")
    Sandbox(IMAGE, client=tight, memory="256m")
    with pytest.raises(CapacityExceeded, match="memory") as caught:
        Sandbox(IMAGE, client=tight, memory="256m")
    assert caught.value.status == 429
    a.stop()                                           # a stopped sandbox holds no place
    c = Sandbox(IMAGE, client=tight, memory="256m")
    with pytest.raises(CapacityExceeded):
        a.start()
    c.remove()
    a.start()


def test_reaper_removes_idle_sandbox(tight, runtime):
    idle = Sandbox(IMAGE, client=tight, memory="64m", ttl=1.0)
    busy = Sandbox(IMAGE, client=tight, memory="64m", ttl=1.0)
    keep = Sandbox(IMAGE, client=tight, memory="64m")
    deadline = time.monotonic() + 10
    while idle.id in [s.id for s in tight.list()]:
        assert time.monotonic() < deadline, "idle sandbox outlived its ttl by 9 s"
        busy.run("true")                              # activity keeps it alive
        time.sleep(0.2)
    assert leftovers_after(runtime, idle.id) == []
    ids = [s.id for s in tight.list()]
    assert busy.id in ids and keep.id in ids


def test_max_lifetime_ends_even_an_active_sandbox(tight, runtime):
    sb = Sandbox(IMAGE, client=tight, memory="64m", max_lifetime=1.0)
    assert sb.info.expires_at is not None
    deadline = time.monotonic() + 10
    while sb.id in [s.id for s in tight.list()]:
        assert time.monotonic() < deadline, "sandbox outlived its max lifetime by 9 s"
        try:
            sb.run("true")
        except (NotFound, AgentDied):   # removed between two commands, or during one
            break
        time.sleep(0.1)
    assert leftovers_after(runtime, sb.id) == []


def test_sdk_retries_only_connecting(tmp_path):
    """No server: the SDK retries the connection with backoff, then says it cannot reach it."""
    from server_process import free_port
    from tumbler.sdk import Client
    from tumbler.sdk.core import RETRIES, backoff_s
    with Client(f"http://127.0.0.1:{free_port()}", "t") as client:
        start = time.monotonic()
        with pytest.raises(ServerUnreachable, match="cannot reach"):
            client.list()
        assert time.monotonic() - start >= sum(backoff_s(i) for i in range(RETRIES))


@pytest.fixture(params=["sqlite", "postgres"])
def registry_url(request):
    """The registry's URL: None (SQLite in the state dir), or a fresh database on the PostgreSQL
    server that TUMBLER_TEST_PG_URL names (e.g. postgresql+psycopg://user:pw@127.0.0.1/postgres)."""
    if request.param == "sqlite":
        yield None
        return
    admin_url = os.environ.get("TUMBLER_TEST_PG_URL")
    if not admin_url:
        pytest.skip("set TUMBLER_TEST_PG_URL to a PostgreSQL server to run the registry on it")
    from sqlalchemy import create_engine, text
    name = f"tumbler_test_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield admin_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_restart_after_sigkill_keeps_everything(runtime, tmp_path, registry_url):
    srv = ServerProcess(tmp_path, db_url=registry_url).start()
    client = srv.client()
    try:
        sb = Sandbox(IMAGE, client=client, labels={"survive": "yes"})
        s = sb.session("work")
        s.run("cd /tmp && export MARK=before-kill")
        sb.write_file("/root/data.txt", "written before the crash")
        orphan = runtime.init_pid(sb.id)
        srv.kill()

        srv.config["keep_sandboxes"] = True            # (for the graceful stop below)
        srv.start()                                    # same state dir, same registry
        listed = client.list(labels={"survive": "yes"})
        assert [(x.id, x.state) for x in listed] == [(sb.id, "running")]
        assert s.run("echo $MARK $PWD").output == "before-kill /tmp\n"
        assert sb.read_file("/root/data.txt") == "written before the crash"

        # A graceful stop with --keep-sandboxes leaves it running for the next start...
        srv.terminate()
        assert runtime.get(sb.id).state.value == "running"
        srv.config["keep_sandboxes"] = False
        srv.start()
        assert s.run("echo $MARK").output == "before-kill\n"
        # ...and one without removes everything the server owns.
        srv.terminate()
        reap(orphan)
        assert leftovers(runtime, sb.id) == []
        srv.start()
        assert client.list() == []
    finally:
        if srv.proc.poll() is None:
            sweep(client, runtime, client.made)
        client.close()
        srv.terminate()


def test_record_of_vanished_container_is_error(runtime, tmp_path):
    srv = ServerProcess(tmp_path).start()
    client = srv.client()
    try:
        sb = Sandbox(IMAGE, client=client)
        srv.kill()
        runtime.remove(sb.id)                          # gone behind the server's back
        srv.start()
        info = client.get(sb.id).info
        assert info.state == "error" and "gone" in info.error
        sb.remove()                                    # the record can still be removed
        assert client.list() == []
    finally:
        if srv.proc.poll() is None:
            sweep(client, runtime, client.made)
        client.close()
        srv.terminate()
