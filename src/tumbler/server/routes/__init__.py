"""One router per resource, all under /v1; each calls only `SandboxService` (request.app.state.service)."""
from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from tumbler.server.service import SandboxService


def service(request: Request) -> SandboxService:
    return request.app.state.service


def json_response(model, status_code: int = 200) -> Response:
    """Serialize a wire model (or send JSON already made) straight to bytes: skips FastAPI's
    re-validation of the return value."""
    content = model if isinstance(model, str) else model.model_dump_json()
    return Response(content, status_code=status_code, media_type="application/json")


def sse_event(kind: str, data: str) -> bytes:
    """One server-sent event: `event: KIND`, `data: DATA` (one line of JSON)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()
