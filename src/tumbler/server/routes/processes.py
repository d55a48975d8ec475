"""/v1/sandboxes/{id}/exec and /processes: one-shot programs and the process table."""
from __future__ import annotations

from fastapi import APIRouter, Request

from tumbler import wire
from tumbler.models import ExecResult
from tumbler.server.routes import json_response, service

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}", tags=["processes"])


@router.post("/exec", response_model=ExecResult)
async def exec_process(sandbox_id: str, body: wire.ExecRequest, request: Request):
    """Run one program (argv, or a string for /bin/sh -c) to its end."""
    result = await service(request).exec(sandbox_id, body)
    return json_response(result.wire_json(body.text))


@router.get("/processes", response_model=wire.ProcessList)
async def list_processes(sandbox_id: str, request: Request):
    return wire.ProcessList(processes=await service(request).processes(sandbox_id))


@router.post("/processes/{pid}/signal", response_model=wire.Ok)
async def signal_process(sandbox_id: str, pid: int, body: wire.SignalRequest, request: Request):
    await service(request).signal(sandbox_id, pid, body.signal)
    return wire.Ok()
