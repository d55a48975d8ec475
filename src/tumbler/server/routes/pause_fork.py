"""/v1/sandboxes/{id}/pause, /resume and /fork (server/pause_fork.py says what they keep)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from tumbler import wire
from tumbler.server import pause_fork
from tumbler.server.routes import json_response, service

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])


@router.post("/{sandbox_id}/pause", response_model=wire.SandboxOut)
async def pause_sandbox(sandbox_id: str, request: Request):
    """Freeze every process: memory kept, no CPU used; calls answer 409 until resumed."""
    svc = service(request)
    return json_response(await pause_fork.pause(svc, sandbox_id))


@router.post("/{sandbox_id}/resume", response_model=wire.SandboxOut)
async def resume_sandbox(sandbox_id: str, request: Request):
    svc = service(request)
    return json_response(await pause_fork.resume(svc, sandbox_id))


@router.post("/{sandbox_id}/fork", status_code=201, response_model=wire.SandboxList)
async def fork_sandbox(sandbox_id: str, body: wire.ForkRequest, request: Request):
    """`count` new running sandboxes with copies of this one's files (not its processes)."""
    svc = service(request)
    records = await pause_fork.fork(svc, sandbox_id, body.count, body.labels)
    return json_response(wire.SandboxList(sandboxes=records), 201)
