"""Proxy mode: calls forwarded to an upstream OpenAI-compatible server (a tiny one on loopback)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripted import answer, next_of
from tumbler.modelservice import AsyncModelBridge, EpisodeEnded, Upstream

AGENT = ["python3", "/root/urllib_agent.py"]


class _Upstream(BaseHTTPRequestHandler):
    """Answers like vLLM would: the scripted guess, token ids and logprobs; /fail/v1 says 429."""

    protocol_version = "HTTP/1.1"
    seen: list

    def log_message(self, *args):
        pass

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, self.headers.get("Authorization"), request))
        if self.path.startswith("/fail/"):
            return self._send(429, {"error": {"message": "slow down", "type": "rate_limit",
                                              "param": None, "code": "rate_limited"}})
        text = answer(request["messages"])
        self._send(200, {"id": "up-1", "object": "chat.completion", "created": 1, "model": request["model"],
                         "choices": [{"index": 0, "finish_reason": "stop", "token_ids": [5, 6],
                                      "message": {"role": "assistant", "content": text},
                                      "logprobs": {"content": [{"token": "a", "logprob": -1.0},
                                                               {"token": "b", "logprob": -2.0}]}}]})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def upstream():
    """(base address, requests seen) of a canned upstream on 127.0.0.1."""
    handler = type("Handler", (_Upstream,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_proxy_plays_and_records(agent_sandbox, upstream, stream):
    address, seen = upstream
    sb = agent_sandbox()
    proxy = Upstream(address + "/v1", api_key="k", model="served-model")
    async with AsyncModelBridge(upstream=proxy) as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, AGENT + ["--seed", "4"] + (["--stream"] if stream else []))
        ended = await next_of(bridge, EpisodeEnded)   # calls never reach the event stream
    assert ended.episode_id == episode and json.loads(ended.output)["solved"] is True
    [t] = bridge.trajectories()
    assert len(t.exchanges) == len(seen) >= 1
    for x, (path, auth, request) in zip(t.exchanges, seen):
        assert (path, auth) == ("/v1/chat/completions", "Bearer k")
        assert request["model"] == "served-model" and "stream" not in request
        assert x.status == 200 and x.response["id"] == "up-1"
        assert (x.token_ids, x.logprobs) == ([5, 6], [-1.0, -2.0])


@pytest.mark.asyncio
async def test_upstream_errors_reach_the_program(agent_sandbox, upstream):
    address, _ = upstream
    sb = agent_sandbox()
    for base, status, code in [(address + "/fail/v1", 429, "rate_limited"),
                               ("http://127.0.0.1:9", 502, "upstream_unreachable")]:
        async with AsyncModelBridge(upstream=Upstream(base, timeout_s=5)) as bridge:
            await bridge.attach(sb)
            episode = await bridge.start_episode(sb.id, AGENT)
            ended = await next_of(bridge, EpisodeEnded)
        assert ended.episode_id == episode and ended.exit_code == 1
        assert f"HTTP Error {status}" in ended.output
        [x] = bridge.trajectories()[0].exchanges
        assert x.status == status and x.response["error"]["code"] == code
