"""What the batch and stream routes of runs answer with (`wire.RunsRequest`): per command a
line `INDEX STATUS LENGTH`, then LENGTH bytes that are exactly what its own run route would
have answered (a `CommandResult`'s JSON, or an error's)."""
from __future__ import annotations

import asyncio
import json
import logging
import math

from tumbler import wire
from tumbler.errors import TumblerError
from tumbler.models import CommandResult
from tumbler.server import metrics

log = logging.getLogger(__name__)

RUNS_MEDIA_TYPE = wire.RUNS_MEDIA_TYPE.encode()


def frame(index: int, status: int, body: bytes) -> bytes:
    return b"%d %d %d\n%s" % (index, status, len(body), body)


def outcome(task: asyncio.Task, text: bool) -> tuple[int, bytes]:
    """(status, body) of a finished `SandboxService.run` task, as its run route answers."""
    if task.cancelled():
        return 500, error_json("internal", "the command's run was cancelled")
    exc = task.exception()
    return answer(task.result(), text) if exc is None else failure(exc)


def answer(result: CommandResult, text: bool) -> tuple[int, bytes]:
    return 200, command_json(result, text)


def failure(exc: BaseException) -> tuple[int, bytes]:
    """(status, body) of a run's error, as its run route answers it."""
    if isinstance(exc, TumblerError):
        return exc.status, error_json(exc.kind, exc.message)
    log.error("a run of a batch or stream failed", exc_info=exc)
    return 500, error_json("internal", "internal server error")


def error_json(kind: str, message: str) -> bytes:
    metrics.ERRORS.labels(kind=kind).inc()
    return json.dumps({"error": {"kind": kind, "message": message}}).encode()


def command_json(result: CommandResult, text: bool) -> bytes:
    """result.wire_json(text), as bytes, written out by hand: the same fields in the same
    order with the same values (a CommandResult's are validated already), for a fraction of
    the CPU of pydantic's or json's. A duration JSON cannot hold (NaN, infinity) goes the
    pydantic way, which writes null."""
    duration = result.duration_s
    if not math.isfinite(duration):
        return result.wire_json(text).encode()
    exit_code = result.exit_code
    return (_COMMAND % (
        _json_str(result.output) if text else "null", wire.b64(result.output_bytes),
        "null" if exit_code is None else int(exit_code), _BOOL[result.timed_out],
        _BOOL[result.truncated], int(result.output_size), float(duration),
        _BOOL[result.session_alive])).encode()


_COMMAND = ('{"output":%s,"output_b64":"%s","exit_code":%s,"timed_out":%s,"truncated":%s,'
            '"output_size":%d,"duration_s":%r,"session_alive":%s}')
_BOOL = {True: "true", False: "false"}
_json_str = json.encoder.encode_basestring   # "..." with JSON escapes, UTF-8 kept as it is
