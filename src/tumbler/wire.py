"""The REST API's messages: one pydantic model per request and response, shared by server and SDK.

Requests forbid unknown fields, so a typo is a 400 that names the field, not a silent no-op.
Bytes cross as base64 in JSON (`*_b64` fields), with a text form only where asked for, so output
that is not UTF-8 survives exactly; file contents and tars travel as raw bodies instead.
A message that is also a value elsewhere is that value's model, not a copy: a command's reply
is `models.CommandResult`, exec's `models.ExecResult`, a create request is a `SandboxSpec` with
the server's deadlines, a sandbox is the runtime's `SandboxInfo` with the server's fields, and
stats are `SandboxStats`. Imports only pydantic, tumbler.models and the runtime's plain models
(`runtime/spec.py`): the SDK depends on this module and nothing server-side.
"""
from __future__ import annotations

import base64
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, computed_field,
                      model_validator)

from tumbler.errors import InvalidRequest
from tumbler.models import FileInfo, ProcessInfo
from tumbler.runtime.spec import SandboxInfo, SandboxSpec

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

class CreateSandboxRequest(Request, SandboxSpec):
    """The sandbox's spec (limits take bytes or '512m', '2g') and the server's deadlines."""

    ttl_s: float | None = Field(default=None, gt=0,
                                description="idle time in seconds after which the server removes "
                                            "the sandbox; null: the server's default")
    max_lifetime_s: float | None = Field(default=None, gt=0,
                                         description="seconds after creation at which the server "
                                                     "removes it regardless; null: server default")

    def spec(self) -> SandboxSpec:
        """The runtime's part of the request."""
        return SandboxSpec.model_construct(**{k: getattr(self, k) for k in SandboxSpec.model_fields})


class PoolRequest(Request):
    """Create or change a warm pool: `size` sandboxes made to `sandbox`, kept started (or
    `per_node` on each node)."""

    size: int = Field(default=0, ge=0, le=10_000, description="sandboxes to keep ready for handover")
    per_node: int | None = Field(default=None, ge=0, le=10_000, description=(
        "keep this many ready on each live node that the sandbox's tumbler.node/ labels allow "
        "instead of `size`: the pool grows onto nodes that join and shrinks off nodes that are "
        "lost (one node outside cluster mode)"))
    sandbox: CreateSandboxRequest = Field(
        default_factory=CreateSandboxRequest,
        description="what each pooled sandbox is; a create with the same spec (labels, ttl "
                    "and lifetime aside) is handed one of them")


class PoolOut(BaseModel):
    name: str
    size: int = Field(description="target number of ready sandboxes")
    per_node: int | None = Field(default=None, description="ready sandboxes kept on each node "
                                 "(size follows the live nodes); null: a fixed size")
    nodes: dict[str, int] = Field(default_factory=dict, description=(
        "cluster mode: ready sandboxes on each node host"))
    ready: int = Field(description="sandboxes ready for handover now")
    starting: int = Field(description="sandboxes being started")
    handed_out: int = Field(description="sandboxes taken from this pool since it was made")
    last_error: str | None = Field(default=None, description="why the last start failed, if it did")
    image: str
    spec: SandboxSpec = Field(description="the pooled sandboxes' spec")


class PoolList(BaseModel):
    pools: list[PoolOut]


class SandboxOut(SandboxInfo):
    """A sandbox as the server knows it: the runtime's SandboxInfo (id, state, the full spec
    with limits in bytes, cores and counts, created, runtime) and the server's own fields. The
    server's registry keeps exactly this record."""

    last_active: float = Field(description="unix time of the last request that used it, seconds")
    ttl_s: float | None = Field(description="idle seconds before removal; null: never")
    expires_at: float | None = Field(description="unix time at which it is removed; null: never")
    error: str | None = Field(default=None, description="why the state is error, or why it "
                              "stopped when its init died")

    @computed_field(description="the image it was made from (spec.image)")
    @property
    def image(self) -> str:
        return self.spec.image

    @computed_field(description="free-form, for filtering (spec.labels)")
    @property
    def labels(self) -> dict[str, str]:
        return self.spec.labels


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


class RunItem(RunRequest):
    """One command of a batch of runs: `RunRequest` plus where it runs."""

    sandbox_id: str = Field(min_length=1, description="the sandbox")
    session: str | None = Field(default=None, min_length=1, description=(
        "the session; null: the sandbox's default session (made by its first command)"))


MAX_RUNS = 1024                 # commands in one POST /v1/runs
RUNS_MEDIA_TYPE = "application/x-tumbler-runs"
RUN_STREAM_PATH = f"{API_PREFIX}/runs/stream"


class RunsRequest(Request):
    """Commands to run at once, in any sessions of any sandboxes. The reply (`RUNS_MEDIA_TYPE`,
    chunked) answers each as it ends: a line `INDEX STATUS LENGTH`, then LENGTH bytes that are
    exactly what the command's own run route would have answered with STATUS (a
    `CommandResult`, or an error `{"error": {"kind", "message"}}`). Commands that end together
    come in one write. The SDK's `AsyncClient` sends the commands its sessions start at the
    same moment this way, so many sessions through one client cost a request per batch."""

    runs: list[RunItem] = Field(min_length=1, max_length=MAX_RUNS)


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
# is a StreamChunk, then one `result` event whose data is a CommandResult with an empty
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
    state: str = Field(default="alive", description="cluster mode: alive; lost (its sandboxes "
                       "answer node_lost); or released (its node host was ended for being idle, "
                       "so that Ray's autoscaler can remove the node; placement starts it again "
                       "when the other nodes are full)")
    backend: str = Field(default="process", description="how the node isolates its sandboxes: "
                         "process (runc jails) or docker (its Docker-API engine's containers)")
    lost: str | None = Field(default=None, description="why the node was declared lost")
    address: str | None = Field(default=None, description="cluster mode: the node's address")
    labels: dict[str, str] = Field(default_factory=dict, description="cluster mode: the Ray node's "
                                   "labels (a sandbox label tumbler.node/KEY=VALUE places by them)")
    sandbox_ids: list[str] = Field(default_factory=list, description="the server's sandboxes on it "
                                   "(ids; pooled ones not counted)")
    images: dict[str, str] = Field(default_factory=dict, description=(
        "cluster mode: the server's images the node is known to have, by the sha256 digest of "
        "each layer (copied there, or found there with that digest)"))


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


class TaskRunOut(BaseModel):
    """A task runner's results folder (`tumbler tasks run --out`): what it has finished so far."""

    name: str = Field(description="the directory's name under the server's runs dir")
    modified: float = Field(description="unix time of its last write, seconds")
    tasks: int = Field(description="tasks with a finished trial")
    trials: int = Field(description="finished trials (lines of results.jsonl)")
    passed: int = Field(description="trials the verifier passed")


class TaskRunList(BaseModel):
    runs_dir: str = Field(description="where the server looks for runs (--runs-dir)")
    runs: list[TaskRunOut]


class TaskRunResults(BaseModel):
    records: list[dict] = Field(description="results.jsonl lines from `after` on: task_id, "
                                            "trial, agent, reward, passed, error, reason, seconds...")
    next: int = Field(description="the `after` that asks for the lines after these")


class TrialTrajectory(BaseModel):
    episodes: list[dict] = Field(description="trajectory.jsonl: the model service's episodes, "
                                             "each with its exchanges (request, response, latency_s)")


class TrialLog(BaseModel):
    text: str = Field(description="the log's end, as text (non-UTF-8 bytes replaced)")
    size: int = Field(description="bytes the log holds in all")
    truncated: bool = Field(description="text is the last 1 MiB of a longer log")


# -- hosted envs: /v1/sandboxes/{id}/envs/... ---------------------------------------------------

class MakeEnvRequest(Request):
    env_id: str
    """A built-in game ("Sokoban-v0"), "gem:<id>" (image with gem-llm) or "module:Class"."""
    kwargs: dict[str, Any] = Field(default_factory=dict)
    """The env's own arguments."""


class ResetEnvRequest(Request):
    seed: int | None = None
    """Same seed, same instance."""


class StepEnvRequest(Request):
    action: str
    step_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Seconds the step may take; past it the episode is reported truncated."""


# -- the model service: /v1/sandboxes/{id}/model/... (sdk.model.HttpEndpoint is the client) -----

class EnableModelRequest(Request):
    port: int = Field(8377, ge=0, le=65535)
    """Port of the endpoint inside the sandbox (0: any free one)."""
    call_timeout_s: float = Field(300.0, gt=0, le=86400)
    """Seconds a program's call waits for an answer before it gets a 504."""
    models: list[str] = Field(default_factory=lambda: ["policy"], min_length=1)
    """Model names GET /v1/models lists."""


class NextCallsRequest(Request):
    owner: int
    """The owner token model/enable returned."""
    timeout_s: float = Field(10.0, gt=0, le=600)
    """Seconds to wait for something to report."""
    max_calls: int = Field(256, ge=1, le=4096)


class RespondRequest(Request):
    call_id: str
    status: int = Field(200, ge=200, le=599)
    body: dict[str, Any]
    """A chat.completion object, or with status >= 400 an OpenAI-style error body."""


class StartEpisodeRequest(Request):
    episode: str
    argv: list[str] | None = None
    command: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    timeout_s: float = Field(3600.0, gt=0, le=86400)
    """Seconds before the program is killed (its episode then ends with reason "timeout")."""


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
    # started processes with a terminal (agent/jobs.py): the console's live terminal
    "job.start", "job.events", "job.input", "job.resize", "job.signal", "job.list",
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
