"""Agent ops as they are, one or a batch: the sandbox handle's HTTP transport.

    POST /v1/sandboxes/{id}/op   {op, args, body_b64, timeout_s}           -> OpReply
    POST /v1/ops                 {calls: [{sandbox_id, op, args, ...}]}    -> {results: [OpReply]}

The batch runs every call concurrently and answers each on its own (an error in one is that
one's reply), so a trainer steps a thousand hosted envs in one request. Ops are built by
`tumbler.ops` on the client; the server checks the op's name against `wire.HANDLE_OPS` and the
agent checks its arguments.
"""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from tumbler import wire
from tumbler.errors import TumblerError
from tumbler.server.routes import service

router = APIRouter(tags=["ops"])


async def _one(request: Request, sandbox_id: str, req: wire.OpRequest) -> wire.OpReply:
    result, body = await service(request).call(sandbox_id, req.op, req.args,
                                               wire.unb64(req.body_b64), timeout=req.timeout_s)
    return wire.OpReply(result=result, body_b64=wire.b64(body) if body else "")


@router.post(f"{wire.API_PREFIX}/sandboxes/{{sandbox_id}}/op", response_model=wire.OpReply)
async def op(sandbox_id: str, body: wire.OpRequest, request: Request):
    """Send one agent op to the sandbox; its error is this request's error."""
    return await _one(request, sandbox_id, body)


@router.post(f"{wire.API_PREFIX}/runs", tags=["sessions"], responses={200: {
    "content": {wire.RUNS_MEDIA_TYPE: {}},
    "description": "chunked: per command, as it ends, a line `INDEX STATUS LENGTH` and LENGTH "
                   "bytes of what its run route answers with STATUS"}})
async def runs(body: wire.RunsRequest, request: Request):
    """Run many commands at once, in any sessions of any sandboxes; each is answered as it
    ends (see `wire.RunsRequest`). Served by `server.fastpath.serve_runs` (the run stream's code), which answers this
    route before FastAPI's routing; this handler is the same code on the full stack."""
    return _Runs(service(request), body)


class _Runs(Response):
    def __init__(self, svc, body: wire.RunsRequest):
        super().__init__()
        self.svc, self.body = svc, body

    async def __call__(self, scope, receive, send) -> None:
        from tumbler.server.fastpath import serve_runs   # fastpath imports the routes
        await serve_runs(self.svc, self.body, receive, send)


@router.post(f"{wire.API_PREFIX}/ops", response_model=wire.BatchOpReply)
async def batch(body: wire.BatchOpRequest, request: Request):
    """Send many ops at once; each reply says ok or names its error."""
    async def guarded(item: wire.BatchOpItem) -> wire.OpReply:
        try:
            return await _one(request, item.sandbox_id, item)
        except TumblerError as exc:
            return wire.OpReply(ok=False, error_kind=exc.kind, error_message=exc.message)
    return wire.BatchOpReply(results=await asyncio.gather(*(guarded(c) for c in body.calls)))
