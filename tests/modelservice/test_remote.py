"""A remote owner: the bridge serves a sandbox through the server's model routes (HttpEndpoint)."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from checks import IMAGE, leftovers
from scripted import serve_until_ended
from tumbler.modelservice import AsyncModelBridge
from tumbler.sdk.model import HttpEndpoint
from tumbler.server.routes import model as routes_model
from tumbler.server.app import create_app
from tumbler.server.config import ServerConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "urllib_agent.py"


@pytest.fixture
def server_url(runtime, tmp_path):
    """A server on loopback (in this process) with the model routes mounted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(ServerConfig(port=port, state_dir=tmp_path), runtime=runtime)
    app.include_router(routes_model.router)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.mark.asyncio
async def test_remote_owner_plays_an_episode(server_url, runtime):
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        reply = await http.post("/v1/sandboxes", json={"image": IMAGE})
        assert reply.status_code == 201, reply.text
        sandbox_id = reply.json()["id"]
        try:
            wrote = await http.put(f"/v1/sandboxes/{sandbox_id}/files/content",
                                   params={"path": "/root/agent.py"}, content=EXAMPLE.read_bytes())
            assert wrote.status_code == 200, wrote.text
            async with AsyncModelBridge() as bridge:
                await bridge.attach(HttpEndpoint(server_url, sandbox_id))
                episode = await bridge.start_episode(sandbox_id, ["python3", "/root/agent.py", "--seed", "2"])
                [ended] = await serve_until_ended(bridge, 1)
            assert ended.episode_id == episode and ended.exit_code == 0, ended.output
            assert json.loads(ended.output)["solved"] is True
            [t] = bridge.trajectories()
            assert t.exchanges and all(x.status == 200 and x.token_ids for x in t.exchanges)
            bad = await http.post(f"/v1/sandboxes/{sandbox_id}/model/next", json={"timeout_s": -1, "owner": 1})
            assert bad.status_code in (400, 422)
        finally:
            await http.delete(f"/v1/sandboxes/{sandbox_id}")
    assert leftovers(runtime, sandbox_id) == []
