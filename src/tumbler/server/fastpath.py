"""The hot path, served as plain ASGI: a command in a session, POST /v1/sandboxes/{id}/run and
/v1/sandboxes/{id}/sessions/{name}/run.

FastAPI's routing and dependency solving cost more CPU per request than the rest of the server
put together (~0.2 ms of a ~0.4 ms request on this 2-core box), and a command round trip is the
request that agents make thousands of times. This middleware answers exactly those two routes,
with the same models, errors and disconnect behaviour as routes/sessions.py, whose handlers stay
for the OpenAPI docs and serve as the reference. Everything else passes through.
"""
from __future__ import annotations

from pydantic import ValidationError
from starlette.responses import Response

from tumbler import wire
from tumbler.errors import TumblerError
from tumbler.server.errors import error_response, validation_message
from tumbler.server.routes.sessions import run_unless_disconnected

RUN_DEFAULT = "/v1/sandboxes/{sandbox_id}/run"
RUN_SESSION = "/v1/sandboxes/{sandbox_id}/sessions/{name}/run"


def match(path: str) -> tuple[str, str | None, str] | None:
    """(sandbox_id, session name or None, route template) if `path` is a run route."""
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
        body = await _read_body(receive)
        if body is None:
            return   # the client left before sending its body
        response = await self._answer(scope, receive, sandbox_id, name, body)
        await response(scope, receive, send)

    @staticmethod
    async def _answer(scope, receive, sandbox_id: str, name: str | None, body: bytes) -> Response:
        try:
            req = wire.RunRequest.model_validate_json(body)
        except ValidationError as exc:
            return error_response(400, "invalid", validation_message(exc.errors()))
        try:
            result = await run_unless_disconnected(scope["app"].state.service, receive,
                                                   sandbox_id, name, req)
        except TumblerError as exc:
            return error_response(exc.status, exc.kind, exc.message)
        return Response(wire.CommandResponse.from_result(result, req.text).model_dump_json(),
                        media_type="application/json")


async def _read_body(receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)
