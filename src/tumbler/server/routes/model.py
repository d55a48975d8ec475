"""The model service over HTTP, for owners on other machines: /v1/sandboxes/{id}/model/...

Each route calls one model op of the sandbox's agent (`tumbler.agent.modelhost`) through
SandboxService.call; `tumbler.sdk.model.HttpEndpoint` is the client, so an AsyncModelBridge
serves a remote sandbox exactly as a local one. Mount with
`app.include_router(model.router)`. The request models are tumbler.wire's, shared with the
client.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Request

from tumbler import wire
from tumbler.server.routes import service

CONTROL_TIMEOUT_S = 30.0
POLL_SLACK_S = 30.0           # seconds on top of a long-poll's own wait for the agent to answer
router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/model", tags=["model"])


async def _op(request: Request, sandbox_id: str, op: str, args: dict, body: bytes = b"",
              timeout: float = CONTROL_TIMEOUT_S) -> tuple[dict, bytes]:
    return await service(request).call(sandbox_id, op, args, body, timeout=timeout)


@router.post("/enable")
async def enable(sandbox_id: str, body: wire.EnableModelRequest, request: Request):
    args = {"port": body.port, "call_timeout": body.call_timeout_s, "models": body.models}
    return (await _op(request, sandbox_id, "model.enable", args))[0]


@router.post("/disable")
async def disable(sandbox_id: str, request: Request):
    return (await _op(request, sandbox_id, "model.disable", {}))[0]


@router.post("/next")
async def next_calls(sandbox_id: str, body: wire.NextCallsRequest, request: Request):
    """Pending calls (each with its request parsed), ended episodes and expired calls."""
    result, raw = await _op(request, sandbox_id, "model.next",
                            {"owner": body.owner, "timeout": body.timeout_s,
                             "max_calls": body.max_calls}, timeout=body.timeout_s + POLL_SLACK_S)
    offset = 0
    for call in result["calls"]:
        call["request"] = json.loads(raw[offset:offset + call["size"]])
        offset += call["size"]
    return result


@router.post("/respond")
async def respond(sandbox_id: str, body: wire.RespondRequest, request: Request):
    data = json.dumps(body.body, separators=(",", ":")).encode()
    return (await _op(request, sandbox_id, "model.respond",
                      {"call_id": body.call_id, "status": body.status}, data))[0]


@router.post("/episodes", status_code=201)
async def start_episode(sandbox_id: str, body: wire.StartEpisodeRequest, request: Request):
    args = {"episode": body.episode, "env": body.env, "cwd": body.cwd, "timeout": body.timeout_s}
    if body.argv is not None:
        args["argv"] = body.argv
    if body.command is not None:
        args["command"] = body.command
    return (await _op(request, sandbox_id, "model.start", args))[0]


@router.delete("/episodes/{episode}")
async def stop_episode(sandbox_id: str, episode: str, request: Request):
    return (await _op(request, sandbox_id, "model.stop", {"episode": episode}))[0]
