"""The REST API's messages: one pydantic model per request and response, shared by server and SDK.

Requests forbid unknown fields, so a typo is a 400/422 that names the field, not a silent no-op.
Bytes cross as base64 in JSON (`*_b64` fields) beside a text form, so output that is not UTF-8
survives exactly; file contents and tars travel as raw request/response bodies instead.
Imports only pydantic and tumbler.models: the SDK depends on this module and nothing server-side.
"""
from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from tumbler.errors import InvalidRequest
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.spec import SandboxState

API_PREFIX = "/v1"
DEFAULT_TIMEOUT_S = 300.0
MAX_TIMEOUT_S = 24 * 3600.0


class Request(BaseModel):
    """Base of request bodies: unknown fields are an error.

    Made in Python (the SDK builds them), a bad value raises InvalidRequest naming the field,
    so a caller catches one TumblerError whatever the field; the server parses bodies with
    model_validate, where FastAPI's handler turns the same error into a 400.
    """

    model_config = ConfigDict(extra="forbid")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidRequest(validation_message(exc)) from None


def validation_message(exc: ValueError) -> str:
    """'field: what is wrong' for each error of a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in errors())
    return str(exc)


def check_sandbox_path(path: str) -> str:
    """Paths name files inside the sandbox and must be absolute; '..' resolves inside it."""
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute (start with '/'), not {path!r}")
    if "\0" in path:
        raise ValueError("path contains a NUL byte")
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _check_b64(text: str) -> str:
    try:
        unb64(text)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise ValueError("not valid base64 (A-Z a-z 0-9 + /, '=' padding)") from None
    return text


# A request field holding base64: bad input is a 422 at validation, not a 500 when decoded.
Base64Text = Annotated[str, AfterValidator(_check_b64)]


# -- errors -------------------------------------------------------------------------------------

class ErrorDetail(BaseModel):
    kind: str = Field(description="machine-readable class: invalid, not_found, exists, conflict, "
                                  "capacity, timeout, sandbox, agent_died, runtime, unauthorized, "
                                  "too_large, internal")
    message: str = Field(description="what went wrong and what to do about it")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- sandboxes ----------------------------------------------------------------------------------

class LimitsIn(Request):
    memory: int | str = Field(default="512m", description="memory limit: bytes, or '512m', '2g'")
    cpus: float = Field(default=1.0, description="CPU time in cores (0.5 = half a core)")
    pids: int = Field(default=512, description="most processes and threads at once")
    nofile: int = Field(default=1024, description="open file descriptors per process")
    disk: int | str = Field(default="2g", description="bytes the sandbox may write: bytes, or '2g'")
    inodes: int | None = Field(default=None, description="files the sandbox may create "
                               "(null: 131072, or one per 4 KiB of a smaller disk)")


class CreateSandboxRequest(Request):
    image: str = Field(default="debian", description="image name in the node's image store")
    limits: LimitsIn = Field(default_factory=LimitsIn)
    env: dict[str, str] = Field(default_factory=dict, description="environment of every process")
    cwd: str = Field(default="/root", description="working directory of sessions and exec")
    hostname: str = Field(default="sandbox", description="the sandbox's hostname")
    network: Literal["none", "host"] = Field(default="none",
                                             description="'none': own namespace, loopback only")
    ttl_s: float | None = Field(default=None, gt=0,
                                description="idle time in seconds after which the server removes "
                                            "the sandbox; null: the server's default")
    max_lifetime_s: float | None = Field(default=None, gt=0,
                                         description="seconds after creation at which the server "
                                                     "removes it regardless; null: server default")
    labels: dict[str, str] = Field(default_factory=dict, description="free-form, for filtering")


class PoolRequest(Request):
    """Create or change a warm pool: `size` sandboxes made to `sandbox`, kept started."""

    size: int = Field(ge=0, le=10_000, description="sandboxes to keep ready for handover")
    sandbox: CreateSandboxRequest = Field(
        default_factory=CreateSandboxRequest,
        description="what each pooled sandbox is; a create with the same spec (labels, ttl "
                    "and lifetime aside) is handed one of them")


class PoolOut(BaseModel):
    name: str
    size: int = Field(description="target number of ready sandboxes")
    ready: int = Field(description="sandboxes ready for handover now")
    starting: int = Field(description="sandboxes being started")
    handed_out: int = Field(description="sandboxes taken from this pool since it was made")
    last_error: str | None = Field(default=None, description="why the last start failed, if it did")
    image: str
    spec: dict = Field(description="the pooled sandboxes' spec")


class PoolList(BaseModel):
    pools: list[PoolOut]


class SandboxOut(BaseModel):
    id: str
    state: SandboxState = Field(description="the life cycle's state (runtime/spec.py): created, "
                                "running, stopped, or error (its container is gone; see `error`)")
    image: str
    spec: dict = Field(description="the full sandbox spec (limits in bytes, cores, counts)")
    labels: dict[str, str] = Field(default_factory=dict)
    created: float = Field(description="unix time, seconds")
    last_active: float = Field(description="unix time of the last request that used it, seconds")
    ttl_s: float | None = Field(description="idle seconds before removal; null: never")
    expires_at: float | None = Field(description="unix time at which it is removed; null: never")
    runtime: str
    error: str | None = Field(default=None, description="why the state is error")


class SandboxList(BaseModel):
    sandboxes: list[SandboxOut]


class SnapshotRequest(Request):
    image: str = Field(description="name of the new image")


class SnapshotResponse(BaseModel):
    image: str


class ForkRequest(Request):
    count: int = Field(default=1, ge=1, le=256, description="new sandboxes to make")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="added to the source's labels in the new ones")


class StatsOut(BaseModel):
    memory_bytes: int = Field(description="memory in use now, bytes")
    memory_limit_bytes: int
    cpu_seconds: float = Field(description="CPU time used since start, seconds")
    pids: int = Field(description="processes and threads now")
    pids_limit: int


# -- sessions -----------------------------------------------------------------------------------

class SessionCreateRequest(Request):
    name: str = Field(description="1-64 letters, digits, '-', '_', '.'")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment")
    cwd: str | None = Field(default=None, description="start directory; null: the sandbox's cwd")


class SessionOut(BaseModel):
    name: str
    pid: int | None = None
    busy: bool = False
    alive: bool = True


class SessionList(BaseModel):
    sessions: list[SessionOut]


class HistoryEntry(BaseModel):
    """One command a session ran through the server, with the end of its output."""

    command: str = Field(description="the command's text (its first 1,024 characters)")
    started: float = Field(description="unix time, seconds")
    output_tail_b64: str = Field(description="the last 4 KiB of its output, base64")
    output_size: int = Field(description="bytes it wrote in all")
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = Field(description="seconds")


class SessionHistory(BaseModel):
    entries: list[HistoryEntry] = Field(description="the session's last 20 commands, oldest first")


class RunRequest(Request):
    command: str = Field(description="bash text, run as if typed at the prompt")
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S,
                           description="seconds; then the command is interrupted, the session lives on")
    max_output: int | None = Field(default=None, gt=0,
                                   description="bytes of output kept (the head); null: agent default")
    text: bool = Field(default=True, description="also send the output as text (`output`); the "
                       "SDK asks for false and derives it from the exact bytes, so the output "
                       "crosses the wire once")


class CommandResponse(BaseModel):
    output: str | None = Field(None, description="the output as text (non-UTF-8 bytes become "
                               "U+FFFD); null when the request said text=false")
    output_b64: str = Field(description="the output's exact bytes, base64")
    exit_code: int | None = Field(description="exit status; null when interrupted")
    timed_out: bool = False
    truncated: bool = Field(False, description="output is the head of a longer output")
    output_size: int = Field(0, description="bytes the command wrote in all")
    duration_s: float = Field(0.0, description="seconds")
    session_alive: bool = True

    @classmethod
    def from_result(cls, result: CommandResult, text: bool = True) -> "CommandResponse":
        return cls(output=result.output if text else None, output_b64=b64(result.output_bytes),
                   **result.model_dump(exclude={"output_bytes"}))

    def to_result(self) -> CommandResult:
        return CommandResult(output_bytes=unb64(self.output_b64),
                             **self.model_dump(exclude={"output", "output_b64"}))


class InputRequest(Request):
    data: str | None = Field(default=None, description="text typed on the terminal (add the newline)")
    data_b64: Base64Text | None = Field(default=None, description="or the exact bytes, base64")

    @model_validator(mode="after")
    def _one(self):
        if (self.data is None) == (self.data_b64 is None):
            raise ValueError("give exactly one of data and data_b64")
        return self

    def payload(self) -> bytes:
        return self.data.encode() if self.data is not None else unb64(self.data_b64)


class InterruptResponse(BaseModel):
    interrupted: bool = Field(description="a command was running and was interrupted")


# Streamed runs (`.../run/stream`, text/event-stream): zero or more `output` events whose data
# is a StreamChunk, then one `result` event whose data is a CommandResponse with an empty
# output (the output is the chunks, in order), or one `error` event whose data is ErrorResponse.
class StreamChunk(BaseModel):
    data_b64: str = Field(description="a chunk of output, base64")


# -- exec ---------------------------------------------------------------------------------------

class ExecRequest(Request):
    argv: list[str] | None = Field(default=None, description="program and arguments")
    command: str | None = Field(default=None, description="or a string for /bin/sh -c")
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = Field(default=None, description="null: the sandbox's cwd")
    stdin_b64: Base64Text = Field(default="", description="standard input, base64")
    timeout: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, le=MAX_TIMEOUT_S, description="seconds")
    max_output: int | None = Field(default=None, gt=0, description="bytes kept per stream")
    text: bool = Field(default=True, description="also send stdout and stderr as text; the SDK "
                       "asks for false (the exact bytes cross once, as base64)")

    @model_validator(mode="after")
    def _one(self):
        if (self.argv is None) == (self.command is None):
            raise ValueError("give exactly one of argv and command")
        if self.argv is not None and not self.argv:
            raise ValueError("argv is empty")
        return self


class ExecResponse(BaseModel):
    stdout: str | None = None
    stderr: str | None = None
    stdout_b64: str
    stderr_b64: str
    exit_code: int | None
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_size: int = Field(0, description="bytes")
    stderr_size: int = Field(0, description="bytes")
    duration_s: float = Field(0.0, description="seconds")

    @classmethod
    def from_result(cls, r: ExecResult, text: bool = True) -> "ExecResponse":
        return cls(stdout=r.stdout if text else None, stderr=r.stderr if text else None,
                   stdout_b64=b64(r.stdout_bytes),
                   stderr_b64=b64(r.stderr_bytes),
                   **r.model_dump(exclude={"stdout_bytes", "stderr_bytes"}))

    def to_result(self) -> ExecResult:
        return ExecResult(stdout_bytes=unb64(self.stdout_b64), stderr_bytes=unb64(self.stderr_b64),
                          **self.model_dump(exclude={"stdout", "stderr", "stdout_b64", "stderr_b64"}))


# -- files --------------------------------------------------------------------------------------
# Contents travel raw: GET/PUT .../files/content?path=... and .../files/tar?path=...

class PathRequest(Request):
    path: str = Field(description="absolute path inside the sandbox (checked by the server: 400 "
                                  "if relative)")


class ChmodRequest(PathRequest):
    mode: int = Field(ge=0, le=0o7777, description="permission bits, e.g. 0o644 = 420")


class MkdirRequest(PathRequest):
    parents: bool = True


class RemoveRequest(PathRequest):
    recursive: bool = False


class FileWriteResponse(BaseModel):
    size: int = Field(description="bytes the file now holds")


class FileList(BaseModel):
    entries: list[FileInfo]


class UploadResponse(BaseModel):
    members: int = Field(description="files, directories and links unpacked")


# -- processes ----------------------------------------------------------------------------------

class ProcessList(BaseModel):
    processes: list[ProcessInfo]


class SignalRequest(Request):
    signal: int | str = Field(default="TERM", description="number or name (TERM, KILL, INT...)")


# -- misc ---------------------------------------------------------------------------------------

class Ok(BaseModel):
    ok: bool = True


class Health(BaseModel):
    ok: bool
    version: str


# -- nodes and training runs (what the console at /ui shows) ------------------------------------

class NodeOut(BaseModel):
    """A machine that runs sandboxes for this server, its admission budget and its load."""

    name: str = Field(description="the host's name")
    budget: dict[str, float] = Field(description="what it admits in all: memory_bytes, pids, cpus")
    admitted: dict[str, float] = Field(description="the limits of the sandboxes holding a place")
    sandboxes: dict[str, int] = Field(description="sandboxes by state")
    cpus: int = Field(description="CPU cores of the host")
    load: list[float] = Field(description="load average over 1, 5 and 15 minutes")
    memory_total_bytes: int
    memory_available_bytes: int


class NodeList(BaseModel):
    nodes: list[NodeOut]


class TrainRunOut(BaseModel):
    """A trainer's run directory (docs/TRAINER.md): what it has written so far."""

    name: str = Field(description="the directory's name under the server's runs dir")
    modified: float = Field(description="unix time of its last write, seconds")
    steps: int = Field(description="lines in metrics.jsonl")
    last: dict = Field(default_factory=dict, description="the last metrics line")
    evals: list[dict] = Field(default_factory=list, description="eval.jsonl, every line")
    episode_steps: list[int] = Field(default_factory=list,
                                     description="steps with rendered episodes (episodes/)")


class TrainRunList(BaseModel):
    runs_dir: str = Field(description="where the server looks for runs (--runs-dir)")
    runs: list[TrainRunOut]


class TrainRunConfig(BaseModel):
    config_yaml: str = Field(description="config.yaml as the trainer wrote it (resolved)")


class TrainRunMetrics(BaseModel):
    records: list[dict] = Field(description="metrics.jsonl lines from `after` on")
    next: int = Field(description="the `after` that asks for the lines after these")


class TrainEpisodes(BaseModel):
    step: int
    episodes: list[dict] = Field(description="episodes/step-NNNN.json: seed, reward, success, "
                                             "turns, error, chat (role/content turns)")


# -- agent ops, one or many (the sandbox handle over HTTP) --------------------------------------

# The agent ops a client may send as they are (`tumbler.ops` builds them): the ones that carry no
# bulk body. File contents and tars have their own routes (raw bodies); `shutdown` is the
# runtime's. Anything else is refused with 400 naming the op.
HANDLE_OPS = frozenset({
    "health", "session.create", "session.run", "session.input", "session.interrupt",
    "session.close", "session.list", "exec", "file.read", "file.stat", "file.list", "file.remove",
    "file.chmod", "file.mkdir", "proc.list", "proc.signal", "env.make", "env.reset", "env.step",
    "env.sample", "env.close", "env.list", "model.enable", "model.next", "model.respond",
    "model.start", "model.stop", "model.disable",
})
MAX_OP_BODY = 8 << 20         # bytes of body one op may carry in JSON (base64)
MAX_BATCH = 4096              # ops in one batch


def check_op(op: str) -> str:
    if op not in HANDLE_OPS:
        raise ValueError(f"op {op!r} cannot be sent through this route; one of: "
                         + ", ".join(sorted(HANDLE_OPS)))
    return op


class OpRequest(Request):
    """One agent op for one sandbox."""

    op: Annotated[str, AfterValidator(check_op)]
    """The op's name (`tumbler.agent` lists them)."""
    args: dict = Field(default_factory=dict)
    """Its arguments."""
    body_b64: Base64Text = Field("", max_length=MAX_OP_BODY * 4 // 3 + 4)
    """Its body (stdin, input, an answer), base64."""
    timeout_s: float = Field(120.0, gt=0, le=MAX_TIMEOUT_S)
    """Seconds the server waits for the agent's reply."""


class OpReply(BaseModel):
    """One op's outcome: its result and body, or the error it raised."""

    ok: bool = True
    result: dict = Field(default_factory=dict)
    body_b64: str = ""
    error_kind: str | None = None
    error_message: str | None = None


class BatchOpItem(OpRequest):
    sandbox_id: str
    """The sandbox to send it to."""


class BatchOpRequest(Request):
    """Many ops, to any sandboxes, run concurrently; each answers on its own."""

    calls: list[BatchOpItem] = Field(max_length=MAX_BATCH)


class BatchOpReply(BaseModel):
    results: list[OpReply]
    """In the order of the calls."""
