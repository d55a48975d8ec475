"""The model service of a sandbox on a Tumbler server: an Endpoint over HTTP for the bridge.

    bridge = AsyncModelBridge()
    await bridge.attach(HttpEndpoint("http://127.0.0.1:8040", sandbox_id, token="..."))

Everything else (episodes, calls, recording, proxy mode) is AsyncModelBridge's, unchanged; the
server's routes are `tumbler.server.routes.model`.
"""
from __future__ import annotations

import json

import httpx

from tumbler import wire
from tumbler.errors import CommandTimeout, ServerUnreachable
from tumbler.modelservice import AsyncModelBridge
from tumbler.sdk.core import Reply, error_for

CONNECT_TIMEOUT_S = 5.0
SLACK_S = 5.0         # seconds past an op's own timeout before the HTTP request gives up


class HttpEndpoint:
    """One sandbox's model ops through the server (tumbler.modelservice.endpoints.Endpoint)."""

    def __init__(self, server_url: str, sandbox_id: str, *, token: str | None = None,
                 client: httpx.AsyncClient | None = None):
        self.sandbox_id = sandbox_id
        self._base = f"{server_url.rstrip('/')}/v1/sandboxes/{sandbox_id}/model"
        self._own_client = client is None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client or httpx.AsyncClient(headers=headers)

    async def call(self, op: str, args: dict, body: bytes = b"", *,
                   timeout: float) -> tuple[dict, bytes]:
        method, path, payload = _route(op, args, body)
        try:
            reply = await self._client.request(
                method, self._base + path, json=payload,
                timeout=httpx.Timeout(timeout + SLACK_S, connect=CONNECT_TIMEOUT_S))
        except httpx.TimeoutException:
            raise CommandTimeout(f"the server did not answer {op} within {timeout} s") from None
        except httpx.TransportError as e:
            raise ServerUnreachable(f"cannot reach the server for {op}: {e}") from None
        if reply.status_code >= 400:
            raise error_for(Reply(reply.status_code, reply.content))
        return reply.json(), b""

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()


def _route(op: str, args: dict, body: bytes) -> tuple[str, str, dict | None]:
    """(method, path under .../model, JSON body) of an agent model op; the bodies are the
    server's own request models (tumbler.wire)."""
    if op == "model.enable":
        req = wire.EnableModelRequest(port=args["port"], call_timeout_s=args["call_timeout"],
                                      models=args["models"])
        return "POST", "/enable", req.model_dump()
    if op == "model.next":
        req = wire.NextCallsRequest(owner=args["owner"], timeout_s=args["timeout"],
                                    max_calls=args["max_calls"])
        return "POST", "/next", req.model_dump()
    if op == "model.respond":
        req = wire.RespondRequest(call_id=args["call_id"], status=args["status"], body=json.loads(body))
        return "POST", "/respond", req.model_dump()
    if op == "model.start":
        fields = {k: v for k, v in args.items() if k != "timeout"}
        return "POST", "/episodes", wire.StartEpisodeRequest(**fields, timeout_s=args["timeout"]).model_dump()
    if op == "model.stop":
        return "DELETE", f"/episodes/{args['episode']}", None
    if op == "model.disable":
        return "POST", "/disable", None
    raise ValueError(f"no route for {op}")


__all__ = ["AsyncModelBridge", "HttpEndpoint"]
