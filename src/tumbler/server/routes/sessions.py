"""/v1/sandboxes/{id}/sessions and /run: bash sessions, plain and streamed.

A client that disconnects while its command runs: the server interrupts the command (as
Ctrl-C would) and the session lives on, free for the next command. Streamed runs likewise.
"""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from tumbler import wire
from tumbler.errors import TumblerError
from tumbler.models import CommandResult
from tumbler.server.routes import json_response, service, sse_event
from tumbler.server.service import DEFAULT_SESSION, SandboxService

router = APIRouter(prefix="/v1/sandboxes/{sandbox_id}", tags=["sessions"])
INTERRUPT_TIMEOUT_S = 30.0


@router.post("/sessions", status_code=201, response_model=wire.SessionOut)
async def create_session(sandbox_id: str, body: wire.SessionCreateRequest, request: Request):
    await service(request).create_session(sandbox_id, body.name, body.env, body.cwd)
    return json_response(wire.SessionOut(name=body.name), 201)


@router.get("/sessions", response_model=wire.SessionList)
async def list_sessions(sandbox_id: str, request: Request):
    sessions = await service(request).list_sessions(sandbox_id)
    return wire.SessionList(sessions=[wire.SessionOut(**s) for s in sessions])


@router.get("/sessions/{name}/history", response_model=wire.SessionHistory)
async def session_history(sandbox_id: str, name: str, request: Request):
    """The session's last commands run through the server, each with the end of its output
    (the default session is `default`); kept in the server's memory, gone at stop or reset."""
    svc = service(request)
    svc.get(sandbox_id)
    return json_response(wire.SessionHistory(entries=[
        wire.HistoryEntry(**{k: v for k, v in e.items() if k != "output_tail"},
                          output_tail_b64=wire.b64(e["output_tail"]))
        for e in svc.history.entries(sandbox_id, name)]))


@router.post("/run", response_model=CommandResult)
async def run_default(sandbox_id: str, body: wire.RunRequest, request: Request):
    """Run a command in the sandbox's default session (made on first use)."""
    return await _run(request, sandbox_id, None, body)


@router.post("/sessions/{name}/run", response_model=CommandResult)
async def run_in_session(sandbox_id: str, name: str, body: wire.RunRequest, request: Request):
    return await _run(request, sandbox_id, name, body)


@router.post("/run/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def run_default_streamed(sandbox_id: str, body: wire.RunRequest, request: Request):
    """Like /sessions/{name}/run/stream, in the default session."""
    return await run_streamed(sandbox_id, None, body, request)


@router.post("/sessions/{name}/run/stream",
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`output` events (StreamChunk), then `result` "
                                             "(CommandResult) or `error` (ErrorResponse)"}})
async def run_streamed(sandbox_id: str, name: str | None, body: wire.RunRequest, request: Request):
    """Run a command and stream its output as server-sent events while it runs."""
    svc = service(request)
    svc.get(sandbox_id)  # an unknown id is a plain 404, not a stream
    return StreamingResponse(_stream(svc, request, sandbox_id, name, body),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.post("/sessions/{name}/input", response_model=wire.Ok)
async def session_input(sandbox_id: str, name: str, body: wire.InputRequest, request: Request):
    """Type bytes on the session's terminal (e.g. the answer to `read x`, with its newline)."""
    await service(request).input(sandbox_id, name, body.payload())
    return wire.Ok()


@router.post("/sessions/{name}/interrupt", response_model=wire.InterruptResponse)
async def session_interrupt(sandbox_id: str, name: str, request: Request):
    return wire.InterruptResponse(interrupted=await service(request).interrupt(sandbox_id, name))


@router.delete("/sessions/{name}", status_code=204)
async def close_session(sandbox_id: str, name: str, request: Request):
    await service(request).close_session(sandbox_id, name)
    return Response(status_code=204)


async def _run(request: Request, sandbox_id: str, name: str | None, body: wire.RunRequest):
    result = await run_unless_disconnected(service(request), request.receive, sandbox_id, name, body)
    return json_response(result.wire_json(body.text))


async def run_unless_disconnected(svc: SandboxService, receive, sandbox_id: str, name: str | None,
                                  body: wire.RunRequest):
    """Run the command; if the client hangs up first (ASGI `receive` says so), interrupt it
    and let the run finish (its reply goes nowhere). The request body must be read already."""
    watcher = asyncio.ensure_future(_interrupt_on_disconnect(receive, svc, sandbox_id,
                                                             name or DEFAULT_SESSION))
    try:
        return await svc.run(sandbox_id, name, body.command, timeout=body.timeout,
                             max_output=body.max_output)
    finally:
        watcher.cancel()


async def _interrupt_on_disconnect(receive, svc: SandboxService, sandbox_id: str, name: str) -> None:
    await _disconnected(receive)
    # Shielded: the run's end cancels this watcher, and it may end *because* of the interrupt.
    await asyncio.shield(_interrupt_quietly(svc, sandbox_id, name))


async def _disconnected(receive) -> None:
    """Return when the client has closed the connection (the body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _interrupt_quietly(svc: SandboxService, sandbox_id: str, name: str) -> None:
    try:
        await asyncio.wait_for(svc.interrupt(sandbox_id, name), INTERRUPT_TIMEOUT_S)
    except (TumblerError, asyncio.TimeoutError):
        pass  # the command may have ended meanwhile; nothing is waiting for this reply


async def _stream(svc: SandboxService, request: Request, sandbox_id: str, name: str | None,
                  body: wire.RunRequest):
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
    task = asyncio.ensure_future(svc.run(sandbox_id, name, body.command, timeout=body.timeout,
                                         max_output=body.max_output, on_output=chunks.put_nowait))
    task.add_done_callback(lambda _t: chunks.put_nowait(None))
    finished = False
    try:
        while (chunk := await chunks.get()) is not None:
            yield sse_event("output", wire.StreamChunk(data_b64=wire.b64(chunk)).model_dump_json())
        try:
            result = task.result()
        except TumblerError as exc:
            yield sse_event("error", json.dumps({"error": {"kind": exc.kind, "message": exc.message}}))
        else:
            yield sse_event("result", result.wire_json(body.text))
        finished = True
    finally:
        if not finished and not task.done():
            # The client went away mid-stream and this generator is being cancelled: stop the
            # command from a task of its own so the session is free again.
            svc.spawn(_interrupt_quietly(svc, sandbox_id, name or DEFAULT_SESSION))
