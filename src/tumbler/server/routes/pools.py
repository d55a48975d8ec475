"""/v1/pools: warm pools of started sandboxes, so that create is a handover."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from tumbler import wire
from tumbler.server.pools import PoolManager
from tumbler.server.routes import json_response

router = APIRouter(prefix="/v1/pools", tags=["pools"])


def _pools(request: Request) -> PoolManager:
    return request.app.state.pools


@router.get("", response_model=wire.PoolList)
async def list_pools(request: Request):
    return json_response(wire.PoolList(pools=_pools(request).list()))


@router.put("/{name}", response_model=wire.PoolOut)
async def set_pool(name: str, body: wire.PoolRequest, request: Request):
    """Make pool `name`, or change its size or spec; it fills in the background."""
    return json_response(_pools(request).set(name, body.sandbox.spec(), body.size, body.per_node))


@router.delete("/{name}", status_code=204)
async def remove_pool(name: str, request: Request):
    """Remove the pool and the sandboxes waiting in it (not those already handed out)."""
    _pools(request).remove(name)
    return Response(status_code=204)
