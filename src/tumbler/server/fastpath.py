"""The hot path, served as plain ASGI: a command in a session, POST /v1/sandboxes/{id}/run and
/v1/sandboxes/{id}/sessions/{name}/run, many at once, POST /v1/runs, a client's commands on one
long-lived request, POST /v1/runs/stream (`runstream`), and a create, POST /v1/sandboxes (a
burst of a thousand from warm pools is mostly this route's CPU).

FastAPI's routing and dependency solving cost more CPU per request than the rest of the server
put together (~0.2 ms of a ~0.4 ms request on this 2-core box), and a command round trip is the
request that agents make thousands of times. This middleware answers exactly those routes,
with the same models, errors and disconnect behaviour as routes/sessions.py and
routes/sandboxes.py, whose handlers stay for the OpenAPI docs and serve as the reference.
Everything else passes through.

`app.TumblerAPI` also sends these routes past Starlette's own middleware layers, straight to
a chain of the server's middlewares that ends here (see there); the reply is written as two raw
ASGI messages from JSON built with the standard library, the same document
`CommandResult.wire_json` makes, for a third of pydantic's CPU.
"""
from __future__ import annotations

import asyncio

from pydantic import ValidationError

from tumbler import wire
from tumbler.errors import TumblerError
from tumbler.server.errors import error_response, validation_message
from tumbler.server.runframes import command_json
from tumbler.server.runstream import RunStream
from tumbler.server.routes.sessions import _interrupt_on_disconnect
from tumbler.server.service import DEFAULT_SESSION

RUN_DEFAULT = "/v1/sandboxes/{sandbox_id}/run"
RUN_SESSION = "/v1/sandboxes/{sandbox_id}/sessions/{name}/run"
RUNS = f"{wire.API_PREFIX}/runs"
RUN_STREAM = wire.RUN_STREAM_PATH
CREATE = f"{wire.API_PREFIX}/sandboxes"
# Seconds a command runs before a watch for the client's hang-up starts. Most commands end
# sooner, and a timer costs a fraction of the task the watch needs; a client that left before
# that is seen all the same (the server remembers a disconnect), only that much later.
WATCH_AFTER_S = 0.02
_JSON_HEADERS = b"application/json"


def match(path: str) -> tuple[str, str | None, str] | None:
    """(sandbox_id, session name or None, route template) if `path` is a fast-path route."""
    if path == RUNS:
        return "", None, RUNS
    if path == RUN_STREAM:
        return "", None, RUN_STREAM
    if path == CREATE:
        return "", None, CREATE
    parts = path.split("/")
    if len(parts) < 5 or parts[1] != "v1" or parts[2] != "sandboxes" or not parts[3]:
        return None
    if len(parts) == 5 and parts[4] == "run":
        return parts[3], None, RUN_DEFAULT
    if len(parts) == 7 and parts[4] == "sessions" and parts[6] == "run" and parts[5]:
        return parts[3], parts[5], RUN_SESSION
    return None


class FastRun:
    """Serve the run routes directly; pass every other request to `app`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        found = match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if found is None:
            return await self.app(scope, receive, send)
        sandbox_id, name, template = found
        scope["tumbler.route"] = template
        if template is RUN_STREAM:
            state = scope["app"].state
            stream = RunStream(state.service, state.config.max_json_bytes, state.stopping)
            return await stream.serve(receive, send)
        body = await _read_body(receive)
        if body is None:
            return   # the client left before sending its body
        model = _MODELS.get(template, wire.RunRequest)
        try:
            req = model.model_validate_json(body)
        except ValidationError as exc:
            return await error_response(400, "invalid", validation_message(exc.errors()))(
                scope, receive, send)
        svc = scope["app"].state.service
        if template is RUNS:
            return await serve_runs(svc, req, receive, send)
        try:
            if template is CREATE:   # routes.sandboxes.create_sandbox
                status, content = 201, (await svc.create(req)).model_dump_json().encode()
            else:
                result = await run_watched(svc, receive, sandbox_id, name, req)
                status, content = 200, command_json(result, req.text)
        except TumblerError as exc:
            return await error_response(exc.status, exc.kind, exc.message)(scope, receive, send)
        await _send_json(send, status, content)


_MODELS = {RUNS: wire.RunsRequest, CREATE: wire.CreateSandboxRequest}   # else wire.RunRequest


async def _send_json(send, status: int, content: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(content)).encode()),
                            (b"content-type", _JSON_HEADERS)]})
    await send({"type": "http.response.body", "body": content})


async def run_watched(svc, receive, sandbox_id: str, name: str | None, body: wire.RunRequest):
    """routes.sessions.run_unless_disconnected, with the hang-up watch started only once the
    command has run WATCH_AFTER_S (a client that hangs up then interrupts it)."""
    watcher: asyncio.Future | None = None

    def watch() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(_interrupt_on_disconnect(receive, svc, sandbox_id,
                                                                 name or DEFAULT_SESSION))
    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
    try:
        return await svc.run(sandbox_id, name, body.command, timeout=body.timeout,
                             max_output=body.max_output)
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


async def serve_runs(svc, req: wire.RunsRequest, receive, send) -> None:
    """POST /v1/runs: every command of the batch at once, each answered as it ends (see
    `wire.RunsRequest`), by the run stream's code with the whole body read already."""
    await RunStream(svc).serve(receive, send, items=req.runs)


async def _read_body(receive) -> bytes | None:
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    if not message.get("more_body"):
        return message.get("body", b"")   # the usual case: the whole body in one message
    chunks = [message.get("body", b"")]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
