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


def install(app: FastAPI) -> None:
    """Register the handlers: TumblerError by its `.status`, validation as 422, the rest as 500."""

    @app.exception_handler(TumblerError)
    async def tumbler_error(_request: Request, exc: TumblerError):
        return error_response(exc.status, exc.kind, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            parts.append(f"{loc}: {e.get('msg')}")
        return error_response(422, "invalid", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "invalid", 401: "unauthorized", 413: "too_large"}.get(
            exc.status_code, "invalid" if exc.status_code < 500 else "internal")
        return error_response(exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}: {exc}")
