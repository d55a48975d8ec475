"""Results that cross every boundary: agent -> runtime -> local API, server and SDK alike."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CommandResult(BaseModel):
    """One command in a bash session."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    output_bytes: bytes = Field(description="what the command wrote to its terminal, exactly")
    exit_code: int | None = Field(description="exit status; None when it was interrupted")
    timed_out: bool = False
    truncated: bool = Field(False, description="output_bytes is the head of a longer output")
    output_size: int = Field(0, description="bytes the command wrote in all")
    duration_s: float = 0.0
    session_alive: bool = True

    @property
    def output(self) -> str:
        """The output as text (bytes that are not UTF-8 become U+FFFD)."""
        return self.output_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class ExecResult(BaseModel):
    """One one-shot process."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    stdout_bytes: bytes
    stderr_bytes: bytes
    exit_code: int | None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_size: int = 0
    stderr_size: int = 0
    duration_s: float = 0.0

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


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
