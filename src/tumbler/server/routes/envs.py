"""Envs hosted in sandboxes, over HTTP: /v1/sandboxes/{id}/envs/... and ROCK's /env/... routes.

Both forms call the agent's env ops (`tumbler.agent.envhost`) through SandboxService.call. A step
that runs past `step_timeout_s` answers 200 with truncated=true and info.error, as HostedEnv does,
so a rollout never hangs on one env. Both routers are mounted by `create_app`. The request
models below belong in tumbler.wire once the wire module takes them.
"""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from tumbler.errors import CommandTimeout
from tumbler.server.routes import service

CONTROL_TIMEOUT_S = 30.0
router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/envs", tags=["envs"])
rock_router = APIRouter(prefix="/env", tags=["envs (ROCK-compatible)"])


class MakeEnv(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env_id: str
    """A built-in game ("Sokoban-v0"), "gem:<id>" (image with gem-llm) or "module:Class"."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """The env's own arguments."""


class ResetEnv(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None
    """Same seed, same instance."""


class StepEnv(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str
    step_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Seconds the step may take; past it the episode is reported truncated."""


class RockRequest(BaseModel):
    """ROCK's env calls carry the sandbox and the handle in the body."""
    model_config = ConfigDict(extra="forbid")
    sandbox_id: str
    env_id: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    handle: str | None = None
    seed: int | None = None
    action: str | None = None
    step_timeout_s: float = Field(30.0, gt=0, le=3600)


async def _op(request: Request, sandbox_id: str, op: str, args: dict, timeout: float) -> dict:
    return (await service(request).call(sandbox_id, op, args, timeout=timeout))[0]


async def _step(request: Request, sandbox_id: str, handle: str, action: str, timeout: float) -> dict:
    try:
        return await _op(request, sandbox_id, "env.step", {"handle": handle, "action": action}, timeout)
    except CommandTimeout:
        why = f"the step took longer than {timeout} s and was abandoned"
        return {"obs": f"[episode truncated: {why}]", "reward": 0.0, "terminated": False,
                "truncated": True, "info": {"error": why}}


@router.post("", status_code=201)
async def make_env(sandbox_id: str, body: MakeEnv, request: Request):
    return await _op(request, sandbox_id, "env.make", body.model_dump(), CONTROL_TIMEOUT_S)


@router.get("")
async def list_envs(sandbox_id: str, request: Request):
    return await _op(request, sandbox_id, "env.list", {}, CONTROL_TIMEOUT_S)


@router.post("/{handle}/reset")
async def reset_env(sandbox_id: str, handle: str, body: ResetEnv, request: Request):
    return await _op(request, sandbox_id, "env.reset", {"handle": handle, "seed": body.seed},
                     CONTROL_TIMEOUT_S)


@router.post("/{handle}/step")
async def step_env(sandbox_id: str, handle: str, body: StepEnv, request: Request):
    return await _step(request, sandbox_id, handle, body.action, body.step_timeout_s)


@router.delete("/{handle}")
async def close_env(sandbox_id: str, handle: str, request: Request):
    return await _op(request, sandbox_id, "env.close", {"handle": handle}, CONTROL_TIMEOUT_S)


@rock_router.post("/make")
async def rock_make(body: RockRequest, request: Request):
    return await _op(request, body.sandbox_id, "env.make",
                     {"env_id": body.env_id, "kwargs": body.kwargs}, CONTROL_TIMEOUT_S)


@rock_router.post("/reset")
async def rock_reset(body: RockRequest, request: Request):
    return await _op(request, body.sandbox_id, "env.reset", {"handle": body.handle, "seed": body.seed},
                     CONTROL_TIMEOUT_S)


@rock_router.post("/step")
async def rock_step(body: RockRequest, request: Request):
    return await _step(request, body.sandbox_id, body.handle or "", body.action or "",
                       body.step_timeout_s)


@rock_router.post("/close")
async def rock_close(body: RockRequest, request: Request):
    return await _op(request, body.sandbox_id, "env.close", {"handle": body.handle}, CONTROL_TIMEOUT_S)


@rock_router.post("/list")
async def rock_list(body: RockRequest, request: Request):
    return await _op(request, body.sandbox_id, "env.list", {}, CONTROL_TIMEOUT_S)
