"""The Connect protocol (connectrpc.com/docs/protocol) with the JSON codec, as E2B's envd speaks it
and the official `e2b` SDK expects: just enough of it to serve unary and server-streaming calls.

Unary: `POST /<service>/<Method>`, `application/json` both ways; an error is an HTTP status with
`{"code": "not_found", "message": ...}`. Server stream: the request is one enveloped message
(`application/connect+json`: a flag byte, a 4-byte big-endian length, the JSON), the response a
run of enveloped messages ended by an end-of-stream envelope (flag 2) that carries the error, if
any. Client stream (StreamInput): enveloped messages in, one enveloped reply and the end out.
"""
from __future__ import annotations

import json
import struct
from typing import AsyncIterator

from starlette.responses import Response, StreamingResponse

from tumbler.errors import TumblerError

STREAM_TYPE = "application/connect+json"
END_STREAM = 0x02
MAX_MESSAGE = 16 << 20       # bytes of one enveloped request message

# Tumbler's error kinds as Connect codes, and each code's HTTP status (unary calls).
CODES = {"invalid": "invalid_argument", "not_found": "not_found", "exists": "already_exists",
         "conflict": "failed_precondition", "capacity": "resource_exhausted",
         "unauthorized": "unauthenticated", "too_large": "resource_exhausted",
         "timeout": "deadline_exceeded", "unreachable": "unavailable", "sandbox": "unavailable",
         "agent_died": "unavailable", "node_lost": "unavailable", "internal": "internal"}
STATUS = {"invalid_argument": 400, "not_found": 404, "already_exists": 409,
          "failed_precondition": 400, "resource_exhausted": 429, "unauthenticated": 401,
          "deadline_exceeded": 504, "unavailable": 503, "internal": 500, "unimplemented": 501,
          "permission_denied": 403, "canceled": 499, "unknown": 500}


class ConnectError(Exception):
    """An error answered in Connect's terms."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    @classmethod
    def of(cls, exc: TumblerError) -> "ConnectError":
        return cls(CODES.get(exc.kind, "internal"), exc.message)

    def body(self) -> dict:
        return {"code": self.code, "message": self.message}


def envelope(message: dict, flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def unenvelope(body: bytes) -> list[dict]:
    """The messages of an enveloped request body (any end-of-stream envelope is skipped)."""
    out, pos = [], 0
    while pos < len(body):
        if len(body) - pos < 5:
            raise ConnectError("invalid_argument", "truncated Connect envelope")
        flags, size = struct.unpack_from(">BI", body, pos)
        if size > MAX_MESSAGE or pos + 5 + size > len(body):
            raise ConnectError("invalid_argument", "Connect envelope larger than its body")
        if not flags & END_STREAM:
            out.append(_json(body[pos + 5:pos + 5 + size]))
        pos += 5 + size
    return out


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise ConnectError("invalid_argument", f"request is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConnectError("invalid_argument", "request must be a JSON object")
    return value


def unary_request(body: bytes, content_type: str) -> dict:
    if content_type.startswith(STREAM_TYPE):
        messages = unenvelope(body)
        return messages[0] if messages else {}
    return _json(body)


def unary_response(message: dict) -> Response:
    return Response(json.dumps(message), media_type="application/json")


def error_response(err: ConnectError) -> Response:
    return Response(json.dumps(err.body()), status_code=STATUS.get(err.code, 500),
                    media_type="application/json")


def stream_response(messages: AsyncIterator[dict]) -> StreamingResponse:
    """A server stream: each message as it comes, then the end (with the error that ended it)."""
    async def frames():
        end: dict = {}
        try:
            async for message in messages:
                yield envelope(message)
        except ConnectError as err:
            end = {"error": err.body()}
        except TumblerError as exc:
            end = {"error": ConnectError.of(exc).body()}
        yield envelope(end, END_STREAM)
    return StreamingResponse(frames(), media_type=STREAM_TYPE)


def stream_error(err: ConnectError) -> Response:
    """A server stream that failed before its first message: the end envelope alone."""
    return Response(envelope({"error": err.body()}, END_STREAM), media_type=STREAM_TYPE)
