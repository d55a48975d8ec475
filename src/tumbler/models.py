"""Results that cross every boundary: agent -> runtime -> local API, server and SDK alike."""
from __future__ import annotations

import base64
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema


def _from_b64(value):
    # In JSON the bytes are standard base64 text; Python callers pass the bytes themselves.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("not valid base64 (A-Z a-z 0-9 + /, '=' padding)") from None
    return value


# Bytes that cross JSON as standard base64 (what `base64 -d` reads), not pydantic's URL-safe form.
WireBytes = Annotated[bytes, BeforeValidator(_from_b64),
                      PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str,
                                      when_used="json"),
                      WithJsonSchema({"type": "string", "contentEncoding": "base64"})]

# Results are wire messages as they are: exact bytes cross JSON as base64 under `*_b64`, and
# the text form (`output`, `stdout`, `stderr`) only where a request asked for it (`text=true`,
# for curl users); in Python the text is always derived from the bytes.
_WIRE = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class CommandResult(BaseModel):
    """One command in a bash session; also the reply of `POST .../run`."""

    model_config = _WIRE

    output_text: str | None = Field(None, alias="output", description=(
        "on the wire only, when the request asked for text: the output as text (non-UTF-8 "
        "bytes become U+FFFD); in Python use `output`"))
    output_bytes: WireBytes = Field(alias="output_b64",
                                description="what the command wrote to its terminal, exactly")
    exit_code: int | None = Field(description="exit status; None when it was interrupted")
    timed_out: bool = False
    truncated: bool = Field(False, description="output_bytes is the head of a longer output")
    output_size: int = Field(0, description="bytes the command wrote in all")
    duration_s: float = Field(0.0, description="seconds")
    session_alive: bool = True

    @property
    def output(self) -> str:
        """The output as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.output_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def wire_json(self, text: bool) -> str:
        """The reply's JSON, with the output as text too when `text`."""
        return self.model_copy(update={"output_text": self.output if text else None}).model_dump_json()


class ExecResult(BaseModel):
    """One one-shot process; also the reply of `POST .../exec`."""

    model_config = _WIRE

    stdout_text: str | None = Field(None, alias="stdout", description="text, when asked for")
    stderr_text: str | None = Field(None, alias="stderr", description="text, when asked for")
    stdout_bytes: WireBytes = Field(alias="stdout_b64")
    stderr_bytes: WireBytes = Field(alias="stderr_b64")
    exit_code: int | None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_size: int = Field(0, description="bytes")
    stderr_size: int = Field(0, description="bytes")
    duration_s: float = Field(0.0, description="seconds")

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def wire_json(self, text: bool) -> str:
        """The reply's JSON, with stdout and stderr as text too when `text`."""
        update = {"stdout_text": self.stdout, "stderr_text": self.stderr} if text else {}
        return self.model_copy(update=update).model_dump_json()


class FileInfo(BaseModel):
    path: str
    type: str = Field(description="file, dir, symlink or other")
    size: int = Field(description="bytes")
    mode: int
    uid: int
    gid: int
    mtime: float = Field(description="unix time, seconds")


class ProcessInfo(BaseModel):
    pid: int
    ppid: int
    pgid: int = 0
    state: str = ""
    uid: int = 0
    rss_bytes: int = 0
    cmd: str = ""
