"""ROCK's wire format (rl-rock 1.11.0's SDK, see docs/ROCK_COMPAT.md): request models, the
{status, message, error, result} envelope, result codes, and a multipart/form-data reader.

Requests ignore unknown fields: the SDK sends many keys Tumbler has no use for (num_gpus,
registry_password, ...) and the contract is to reject nothing just because it is present.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tumbler.errors import InvalidRequest, TumblerError

PREFIX = "/apis/envs/sandbox/v1"
# ROCK's result codes; the SDK turns 4xxx into BadRequestRockError, 5xxx into
# InternalServerRockError (raise_for_code on start/delete failures).
CODE_OK, CODE_BAD_REQUEST, CODE_INTERNAL = 2000, 4000, 5000
# Tumbler error kinds that are the caller's fault, i.e. ROCK's 4000 class.
CALLER_KINDS = frozenset({"invalid", "not_found", "exists", "conflict", "too_large", "unauthorized"})


class RockRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


class SandboxRef(RockRequest):
    sandbox_id: str


class StartIn(RockRequest):
    image: str = "python:3.11"
    memory: str | int | None = None
    cpus: float | None = None
    limit_cpus: float | None = None
    sandbox_id: str | None = Field(default=None, description="caller-chosen id (an alias here)")
    auto_clear_time_minutes: int | None = None
    auto_clear_time: int | None = None
    auto_archive_seconds: int | None = Field(default=None, ge=0)
    auto_delete_seconds: int | None = Field(default=None, ge=0)


class ExecuteIn(SandboxRef):
    command: str | list[str]
    timeout: float | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None


class CreateSessionIn(SandboxRef):
    session_type: str = "bash"
    session: str = "default"
    startup_source: list[str] = Field(default_factory=list)
    env_enable: bool = False
    env: dict[str, str] | None = None
    remote_user: str | None = None


class RunInSessionIn(SandboxRef):
    action_type: str = "bash"
    session: str = "default"
    command: str
    check: Literal["raise", "silent", "ignore"] = "raise"
    timeout: float | None = None


class CloseSessionIn(SandboxRef):
    session_type: str = "bash"
    session: str = "default"


class ReadFileIn(SandboxRef):
    path: str
    encoding: str | None = None
    errors: str | None = None


class WriteFileIn(SandboxRef):
    path: str
    content: str


class Envelope(dict):
    """A complete reply; a handler returns one to answer Failed without raising."""


def success(result: Any) -> Envelope:
    return Envelope(status="Success", message=None, error=None, result=result)


def failed(message: str, error: str, result: Any = None) -> Envelope:
    return Envelope(status="Failed", message=message, error=error, result=result)


def code_for(exc: TumblerError) -> int:
    return CODE_BAD_REQUEST if exc.kind in CALLER_KINDS else CODE_INTERNAL


def coded_result(exc: TumblerError) -> dict:
    """The `result` of a failed start/delete: its `code` picks the SDK's exception class."""
    return {"code": code_for(exc), "exit_code": None, "failure_reason": exc.message}


# -- multipart/form-data (the SDK's upload) --------------------------------------------------
# Parsed here, with the stdlib only: Tumbler does not depend on python-multipart, and the one
# upload form the SDK sends (two text fields and one file part) needs nothing more.

def boundary_of(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise InvalidRequest(f"upload must be multipart/form-data, not {kind.strip() or 'nothing'!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode()
    raise InvalidRequest("multipart/form-data without a boundary")


def parse_form(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """(text fields, file parts as name -> (filename, bytes)) of a multipart/form-data body."""
    delimiter = b"--" + boundary_of(content_type)
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    # The body is: delimiter, CRLF headers CRLF CRLF data, CRLF delimiter, ..., CRLF delimiter "--".
    parts = (b"\r\n" + body).split(b"\r\n" + delimiter)
    if len(parts) < 3 or parts[0] or not parts[-1].startswith(b"--"):
        raise InvalidRequest("malformed multipart/form-data body")
    for part in parts[1:-1]:
        head, sep, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("malformed multipart part (no blank line after its headers)")
        name, filename = _disposition(head.decode("latin-1"))
        if filename is None:
            fields[name] = data.decode("utf-8", "replace")
        else:
            files[name] = (filename, data)
    if not fields and not files:
        raise InvalidRequest("empty or malformed multipart/form-data body")
    return fields, files


def _disposition(head: str) -> tuple[str, str | None]:
    for line in head.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        params = {}
        for item in value.split(";")[1:]:
            k, _, v = item.strip().partition("=")
            params[k.lower()] = v.strip('"')
        if "name" in params:
            return params["name"], params.get("filename")
    raise InvalidRequest("multipart part without a Content-Disposition name")
