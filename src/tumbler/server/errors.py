"""The one mapping of errors to HTTP replies: {"error": {"kind", "message"}}."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from tumbler.errors import TumblerError
from tumbler.server import metrics

log = logging.getLogger(__name__)


def error_response(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
    metrics.ERRORS.labels(kind=kind).inc()
    return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status,
                        headers=headers)


def validation_message(errors) -> str:
    """One line naming each bad field and what is wrong with it."""
    parts = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {e.get('msg')}")
    return "; ".join(parts) or "invalid request"


class CatchAll:
    """Innermost middleware: an unexpected exception becomes a 500 reply here.

    Starlette's own catch-all re-raises after answering, and uvicorn then closes the
    connection, which a keep-alive client finds reset on its next request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            kind = "runtime" if isinstance(exc, OSError) else "internal"
            response = error_response(500, kind, f"internal error: {type(exc).__name__}: {exc}")
            await response(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers: TumblerError by its `.status`, validation as 400 (one status for
    a bad value, whatever the field: 400 invalid, as InvalidRequest), the rest as 500."""

    @app.exception_handler(TumblerError)
    async def tumbler_error(_request: Request, exc: TumblerError):
        return error_response(exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        return error_response(400, "invalid", validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "invalid", 401: "unauthorized", 413: "too_large"}.get(
            exc.status_code, "invalid" if exc.status_code < 500 else "internal")
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}: {exc}")
