"""Envs hosted in sandboxes, over HTTP: /v1/sandboxes/{id}/envs/... here, and ROCK's env routes
(/env/... as rocklet answers them, /apis/v1/envs/gem/... as ROCK's admin does for RockEnv) in
rock_envs.py, exported here as `rock_router`.

Both call the agent's env ops (`tumbler.agent.envhost`) through SandboxService.call. A step
that runs past `step_timeout_s` answers 200 with truncated=true and info.error, as HostedEnv does,
so a rollout never hangs on one env. Both routers are mounted by `create_app`; the request
models are tumbler.wire's.
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from tumbler import wire
from tumbler.errors import CommandTimeout
from tumbler.server.routes import service
from tumbler.server.routes.rock_envs import router as rock_router  # noqa: F401 (mounted by app)

CONTROL_TIMEOUT_S = 30.0
router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}/envs", tags=["envs"])


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
async def make_env(sandbox_id: str, body: wire.MakeEnvRequest, request: Request):
    return await _op(request, sandbox_id, "env.make", body.model_dump(), CONTROL_TIMEOUT_S)


@router.get("")
async def list_envs(sandbox_id: str, request: Request):
    return await _op(request, sandbox_id, "env.list", {}, CONTROL_TIMEOUT_S)


@router.post("/{handle}/reset")
async def reset_env(sandbox_id: str, handle: str, body: wire.ResetEnvRequest, request: Request):
    return await _op(request, sandbox_id, "env.reset", {"handle": handle, "seed": body.seed},
                     CONTROL_TIMEOUT_S)


@router.post("/{handle}/step")
async def step_env(sandbox_id: str, handle: str, body: wire.StepEnvRequest, request: Request):
    return await _step(request, sandbox_id, handle, body.action, body.step_timeout_s)


@router.delete("/{handle}")
async def close_env(sandbox_id: str, handle: str, request: Request):
    return await _op(request, sandbox_id, "env.close", {"handle": handle}, CONTROL_TIMEOUT_S)
