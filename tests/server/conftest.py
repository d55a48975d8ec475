"""Fixtures: a real server on loopback in a subprocess and SDK clients of it; every sandbox a
test made is removed and leak-checked on teardown."""
from __future__ import annotations

import signal

import pytest

from server_process import TOKEN, AsyncTrackingClient, ServerProcess, sweep


@pytest.fixture(scope="session")
def server(runtime, tmp_path_factory):
    """The shared server: auth on, 8 MiB upload limit, 64 KiB JSON limit."""
    srv = ServerProcess(tmp_path_factory.mktemp("server"), max_upload_bytes=8 << 20,
                        max_json_bytes=64 << 10).start()
    yield srv
    # uvicorn re-raises the SIGTERM it handled once its graceful shutdown is done
    assert srv.terminate() in (0, -signal.SIGTERM)


@pytest.fixture
def api(server, runtime):
    """A sync SDK client of `server`; on teardown every sandbox made is removed and leak-checked."""
    client = server.client()
    yield client
    sweep(client, runtime, client.made)
    client.close()


@pytest.fixture
def new_aclient(server, api):
    """Makes AsyncClients of `server` whose sandboxes `api`'s teardown checks (close them in the test)."""
    return lambda **options: AsyncTrackingClient(server.url, TOKEN, api.made, **options)
