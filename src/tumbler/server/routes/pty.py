"""`WS /v1/sandboxes/{id}/pty`: a terminal in a sandbox over a WebSocket, for full-screen programs.

Query: `cols`, `rows` (the size to start with), `cmd` (repeat for argv; default `bash -l -i`).
The program runs as one of the agent's started processes with a PTY (agent/jobs.py), in its own
session, with TERM=xterm-256color. Frames: binary from the client is typed into the terminal;
text from the client is JSON, `{"resize": {"cols": C, "rows": R}}`; binary to the client is
what the terminal wrote; the last text frame to the client is `{"exit_code": N}` before the
close. When the client goes (closed or vanished), the program's whole process group is killed:
a terminal no one holds leaves no process behind. Auth is the server's (the bearer token in the
upgrade request's headers).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import AsyncIterator

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from tumbler.errors import TumblerError
from tumbler.server.routes import service
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])

POLL_WAIT_S = 15.0
POLL_TIMEOUT_S = 40.0
KILL = 9
DEFAULT_CMD = ["/bin/bash", "-l", "-i"]
MAX_INPUT = 1 << 20      # bytes of one input frame


@router.websocket("/{sandbox_id}/pty")
async def pty(websocket: WebSocket, sandbox_id: str, cols: int = Query(80, ge=1, le=1000),
              rows: int = Query(24, ge=1, le=1000), cmd: list[str] = Query([])):
    svc: SandboxService = service(websocket)
    await websocket.accept()
    try:
        record = svc.get(sandbox_id)
        env = {**record.spec.env, "TERM": "xterm-256color"}
        result, _ = await svc.call(sandbox_id, "job.start", {
            "argv": cmd or DEFAULT_CMD, "env": env, "pty": {"cols": cols, "rows": rows}})
        pid = int(result["pid"])
    except TumblerError as exc:
        await websocket.send_text(json.dumps({"error": exc.message}))
        await websocket.close(code=1011)
        return
    output = asyncio.ensure_future(_pump_output(svc, sandbox_id, pid, websocket))
    typing = asyncio.ensure_future(_pump_input(svc, sandbox_id, pid, websocket))
    exited = False
    try:
        await asyncio.wait({output, typing}, return_when=asyncio.FIRST_COMPLETED)
        exited = output.done() and not output.cancelled() and output.exception() is None
    finally:
        for task in (output, typing):
            task.cancel()
        await asyncio.gather(output, typing, return_exceptions=True)
        if not exited:   # the client went first (or the sandbox did): nothing may stay behind
            await _kill(svc, sandbox_id, pid)
            try:
                await websocket.close(code=1011)
            except RuntimeError:   # closed already
                pass


async def _pump_output(svc, sandbox_id: str, pid: int, websocket: WebSocket) -> None:
    """Send the terminal's output until the program ends, then its exit code, then close."""
    after = 0
    while True:
        result, body = await svc.call(sandbox_id, "job.events",
                                      {"pid": pid, "after": after, "wait": POLL_WAIT_S},
                                      timeout=POLL_TIMEOUT_S)
        if body:
            await websocket.send_bytes(body)
        after = int(result["next"])
        end = result.get("end")
        if isinstance(end, dict):
            await websocket.send_text(json.dumps({"exit_code": int(end.get("exit_code", -1))}))
            await websocket.close()
            return


async def frames(websocket: WebSocket) -> AsyncIterator[dict]:
    """The client's messages until it goes (a close, or a vanished connection)."""
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return
        if message["type"] == "websocket.disconnect":
            return
        yield message


async def _pump_input(svc, sandbox_id: str, pid: int, websocket: WebSocket) -> None:
    """Type what the client sends; apply its resizes. Returns when the client goes."""
    async for message in frames(websocket):
        data, text = message.get("bytes"), message.get("text")
        if data:
            await svc.call(sandbox_id, "job.input", {"pid": pid}, data[:MAX_INPUT])
        elif text:
            try:
                size = json.loads(text).get("resize") or {}
                await svc.call(sandbox_id, "job.resize", {"pid": pid, "cols": int(size["cols"]),
                                                          "rows": int(size["rows"])})
            except (ValueError, KeyError, TypeError, AttributeError):
                await websocket.send_text(json.dumps(
                    {"error": 'text frames must be {"resize": {"cols": C, "rows": R}}'}))


async def _kill(svc, sandbox_id: str, pid: int) -> None:
    try:
        await svc.call(sandbox_id, "job.signal", {"pid": pid, "signal": KILL})
    except TumblerError as exc:   # the sandbox went meanwhile: the program went with it
        log.info("pty %s/%s: not killed: %s", sandbox_id, pid, exc.message)
