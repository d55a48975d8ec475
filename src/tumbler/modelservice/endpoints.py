"""How a bridge reaches one sandbox's agent: an `Endpoint` is one async method, `call(op, ...)`.

`LocalEndpoint` drives a `LocalSandbox` on this host through the asyncio agent client: one
connection per sandbox carries the long-poll (`model.next`) and the answers side by side
(requests are multiplexed by id), so an answer never waits behind a poll and no thread is spent
per sandbox. (Two blocking threads per sandbox contended for the GIL: at 64 sandboxes that was
the p99.) The SDK's HTTP endpoint (`tumbler.sdk.model`) maps the same ops to the server's routes.
"""
from __future__ import annotations

import json
from typing import Protocol

from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.errors import agent_errors
from tumbler.errors import Conflict, InvalidRequest
from tumbler.local import LocalSandbox
from tumbler.runtime.spec import SandboxState


class Endpoint(Protocol):
    """One sandbox's model ops (`tumbler.agent.modelhost`), errors raised as tumbler.errors."""

    sandbox_id: str

    async def call(self, op: str, args: dict, body: bytes = b"", *,
                   timeout: float) -> tuple[dict, bytes]:
        """One op -> (result, body); timeout in seconds."""

    async def close(self) -> None:
        """Release what the endpoint holds; a poll in flight may finish on its own."""


class LocalEndpoint:
    """An Endpoint over a LocalSandbox (same host, agent socket); use it on one event loop."""

    def __init__(self, sandbox: LocalSandbox):
        if sandbox.info.state != SandboxState.RUNNING:
            raise Conflict(f"sandbox {sandbox.id} is {sandbox.info.state.value}; start it first")
        self.sandbox_id = sandbox.id
        self._client = AsyncAgentClient(sandbox.runtime.agent_socket(sandbox.id))

    async def call(self, op: str, args: dict, body: bytes = b"", *,
                   timeout: float) -> tuple[dict, bytes]:
        with agent_errors(self.sandbox_id, op, timeout):
            return await self._client.call(op, args, body, timeout=timeout)

    async def close(self) -> None:
        # Fails a poll in flight with AgentGone; the bridge has stopped listening by then.
        await self._client.close()


def endpoint_for(sandbox) -> Endpoint:
    """The Endpoint that reaches this sandbox's model ops: a LocalSandbox through its agent
    socket, a server's `tumbler.Sandbox`/`AsyncSandbox` through the server's model routes, and
    an Endpoint as it is."""
    if isinstance(sandbox, LocalSandbox):
        return LocalEndpoint(sandbox)
    client = getattr(sandbox, "client", None)
    if client is not None and isinstance(getattr(client, "url", None), str):
        from tumbler.sdk.model import HttpEndpoint
        return HttpEndpoint(client.url, sandbox.id, token=getattr(client, "token", None))
    if callable(getattr(sandbox, "call", None)) and hasattr(sandbox, "sandbox_id"):
        return sandbox
    raise InvalidRequest(f"cannot serve the model endpoint of {type(sandbox).__name__}: give a "
                         "LocalSandbox, a tumbler.Sandbox or AsyncSandbox, or an Endpoint")


def unpack_calls(result: dict, body: bytes) -> list[dict]:
    """The calls of a model.next reply, each with its `request` parsed.

    The agent sends the requests' raw JSON concatenated in the body (`size` bytes each); an
    endpoint that already parsed them (the HTTP one) puts `request` in each call.
    """
    calls, offset = [], 0
    for meta in result.get("calls", []):
        if "request" not in meta:
            size = meta["size"]
            meta = {**meta, "request": json.loads(body[offset:offset + size])}
            offset += size
        calls.append(meta)
    return calls
