"""The model service over HTTP, for owners on other machines: /v1/sandboxes/{id}/model/...

Each route calls one model op of the sandbox's agent (`tumbler.agent.modelhost`) through
SandboxService.call; `tumbler.sdk.model.HttpEndpoint` is the client, so an AsyncModelBridge
serves a remote sandbox exactly as a local one. Mount with
`app.include_router(model.router)`. The request models belong in tumbler.wire once the
wire module takes them.
"""
from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tumbler.server.routes import service

CONTROL_TIMEOUT_S = 30.0
POLL_SLACK_S = 30.0           # seconds on top of a long-poll's own wait for the agent to answer
router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/model", tags=["model"])


class EnableModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(8377, ge=0, le=65535)
    """Port of the endpoint inside the sandbox (0: any free one)."""
    call_timeout_s: float = Field(300.0, gt=0, le=86400)
    """Seconds a program's call waits for an answer before it gets a 504."""
    models: list[str] = Field(default_factory=lambda: ["policy"], min_length=1)
    """Model names GET /v1/models lists."""


class NextCalls(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: int
    """The owner token model/enable returned."""
    timeout_s: float = Field(10.0, gt=0, le=600)
    """Seconds to wait for something to report."""
    max_calls: int = Field(256, ge=1, le=4096)


class Respond(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_id: str
    status: int = Field(200, ge=200, le=599)
    body: dict[str, Any]
    """A chat.completion object, or with status >= 400 an OpenAI-style error body."""


class StartEpisode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episode: str
    argv: list[str] | None = None
    command: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float = Field(3600.0, gt=0, le=86400)
    """Seconds before the program is killed (its episode then ends with reason "timeout")."""


async def _op(request: Request, sandbox_id: str, op: str, args: dict, body: bytes = b"",
              timeout: float = CONTROL_TIMEOUT_S) -> tuple[dict, bytes]:
    return await service(request).call(sandbox_id, op, args, body, timeout=timeout)


@router.post("/enable")
async def enable(sandbox_id: str, body: EnableModel, request: Request):
    args = {"port": body.port, "call_timeout": body.call_timeout_s, "models": body.models}
    return (await _op(request, sandbox_id, "model.enable", args))[0]


@router.post("/disable")
async def disable(sandbox_id: str, request: Request):
    return (await _op(request, sandbox_id, "model.disable", {}))[0]


@router.post("/next")
async def next_calls(sandbox_id: str, body: NextCalls, request: Request):
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
async def respond(sandbox_id: str, body: Respond, request: Request):
    data = json.dumps(body.body, separators=(",", ":")).encode()
    return (await _op(request, sandbox_id, "model.respond",
                      {"call_id": body.call_id, "status": body.status}, data))[0]


@router.post("/episodes", status_code=201)
async def start_episode(sandbox_id: str, body: StartEpisode, request: Request):
    args = {"episode": body.episode, "env": body.env, "cwd": body.cwd, "timeout": body.timeout_s}
    if body.argv is not None:
        args["argv"] = body.argv
    if body.command is not None:
        args["command"] = body.command
    return (await _op(request, sandbox_id, "model.start", args))[0]


@router.delete("/episodes/{episode}")
async def stop_episode(sandbox_id: str, episode: str, request: Request):
    return (await _op(request, sandbox_id, "model.stop", {"episode": episode}))[0]
