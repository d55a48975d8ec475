"""/v1/sandboxes: the life cycle."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from tumbler import wire
from tumbler.errors import InvalidRequest
from tumbler.runtime.spec import SandboxState, SandboxStats
from tumbler.server.routes import json_response, service

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])


@router.post("", status_code=201, response_model=wire.SandboxOut)
async def create_sandbox(body: wire.CreateSandboxRequest, request: Request):
    """Create and start a sandbox; returns once its agent accepts requests."""
    svc = service(request)
    return json_response(await svc.create(body), 201)


@router.get("", response_model=wire.SandboxList)
async def list_sandboxes(request: Request,
                         state: SandboxState | None = Query(None, description="only this state"),
                         label: list[str] = Query([], description="key=value; repeat to AND them")):
    labels = {}
    for item in label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"label filter {item!r} must be key=value")
        labels[key] = value
    svc = service(request)
    return json_response(wire.SandboxList(sandboxes=svc.list(state, labels)))


@router.get("/{sandbox_id}", response_model=wire.SandboxOut)
async def get_sandbox(sandbox_id: str, request: Request):
    svc = service(request)
    return json_response(svc.get(sandbox_id))


@router.post("/{sandbox_id}/stop", response_model=wire.SandboxOut)
async def stop_sandbox(sandbox_id: str, request: Request):
    """Stop every process; files are kept. Sessions end."""
    svc = service(request)
    return json_response(await svc.stop(sandbox_id))


@router.post("/{sandbox_id}/start", response_model=wire.SandboxOut)
async def start_sandbox(sandbox_id: str, request: Request):
    svc = service(request)
    return json_response(await svc.start(sandbox_id))


@router.post("/{sandbox_id}/reset", response_model=wire.SandboxOut)
async def reset_sandbox(sandbox_id: str, request: Request):
    """Back to the pristine image: processes, sessions and written files all gone."""
    svc = service(request)
    return json_response(await svc.reset(sandbox_id))


@router.post("/{sandbox_id}/snapshot", response_model=wire.SnapshotResponse)
async def snapshot_sandbox(sandbox_id: str, body: wire.SnapshotRequest, request: Request):
    """Save the sandbox's files as a new image."""
    return wire.SnapshotResponse(image=await service(request).snapshot(sandbox_id, body.image))


@router.delete("/{sandbox_id}", status_code=204)
async def delete_sandbox(sandbox_id: str, request: Request):
    """Remove the sandbox and everything of it."""
    await service(request).remove(sandbox_id)
    return Response(status_code=204)


@router.get("/{sandbox_id}/stats", response_model=SandboxStats)
async def sandbox_stats(sandbox_id: str, request: Request):
    return await service(request).stats(sandbox_id)
