"""ROCK-compatible routes, /apis/envs/sandbox/v1/...: what rl-rock 1.11.0's unmodified SDK calls
(`rock.sdk.sandbox.client.Sandbox`), translated to SandboxService. The contract is
docs/ROCK_COMPAT.md; wire models and the envelope are in rock_wire.py.

Every reply is HTTP 200 with ROCK's envelope, business errors included: the SDK raises on any
4xx/5xx before it looks at the body, and it expects `status: "Failed"` for a normal failure
(a non-zero exit under check="raise", which its nohup mode relies on; an unknown session).
Only auth (401) and body size (413) answer otherwise, from the middleware.

Images: ROCK clients name images such as "python:3.11". ROCK's SDK default, "python:3.11", runs
on the server's default image out of the box (Debian bookworm's python3 is 3.11; logged), unless
TUMBLER_ROCK_IMAGES maps it elsewhere. Any other image this server does not have is a clear
Failed unless the operator maps it: TUMBLER_ROCK_IMAGES="ubuntu:22.04=debian,..." maps names one
by one, TUMBLER_ROCK_DEFAULT_IMAGE=debian runs every other unknown name on that image (logged).
Both are read per request, so no restart is needed to change them.
"""
from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import posixpath
import shlex
from typing import Any, Awaitable, Callable, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

from tumbler import wire
from tumbler.errors import (AlreadyExists, CommandTimeout, InvalidRequest, NotFound,
                            TumblerError)
from tumbler.server.registry import SandboxRecord
from tumbler.server import rock_archive, rock_deadlines
from tumbler.server.routes import rock_wire as rw
from tumbler.server.routes import service
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
router = APIRouter(prefix=rw.PREFIX, tags=["ROCK-compatible"])
T = TypeVar("T")

IMAGE_MAP_ENV = "TUMBLER_ROCK_IMAGES"
# ROCK's SDK starts this image unless told otherwise; bookworm's python3 is 3.11, so it maps to
# the default image (TUMBLER_ROCK_IMAGES overrides it).
ROCK_SDK_IMAGE = "python:3.11"
BUILTIN_IMAGES = {ROCK_SDK_IMAGE: wire.CreateSandboxRequest.model_fields["image"].default}
DEFAULT_IMAGE_ENV = "TUMBLER_ROCK_DEFAULT_IMAGE"
ALIAS_LABEL = "rock.sandbox_id"      # a caller-chosen id, looked up when it is not ours
IMAGE_LABEL = "rock.image"           # the image name the client asked for
HEADER_LABELS = {"x-user-id": "rock.user_id", "x-experiment-id": "rock.experiment_id",
                 "x-namespace": "rock.namespace"}
EXEC_TIMEOUT_S = 1200.0              # ROCK's Command default
RUN_TIMEOUT_S = 300.0                # the SDK's read timeout when the action has none
SOURCE_TIMEOUT_S = 60.0
INTERRUPT_TIMEOUT_S = 30.0
STATES = {"created": "pending", "running": "running", "stopped": "stopped", "error": "stopped",
          "paused": "stopped", "archived": "archived"}
# Which event moved a sandbox into a state, in ROCK's words (state_history).
EVENTS = {"running": "start", "stopped": "stop", "archived": "archive", "paused": "pause",
          "error": "lost", "created": "create"}


# -- the envelope around every handler ----------------------------------------------------------

async def _answer(request: Request, model: type[BaseModel] | None, what: str,
                  handler: Callable[..., Awaitable[Any]],
                  on_failure: Callable[[TumblerError], Any] = lambda _exc: None) -> JSONResponse:
    """Parse the JSON body into `model`, run `handler(request, body)`, wrap what it returns.
    Bad input and TumblerErrors become a Failed envelope whose result is `on_failure(exc)`."""
    try:
        body = model.model_validate(await _json(request)) if model else None
        result = await handler(request, body)
    except ValidationError as exc:
        return _failed(what, InvalidRequest(_validation_message(exc)), on_failure)
    except TumblerError as exc:
        return _failed(what, exc, on_failure)
    return JSONResponse(result if isinstance(result, rw.Envelope) else rw.success(result))


def _failed(what: str, exc: TumblerError, on_failure: Callable[[TumblerError], Any]) -> JSONResponse:
    log.info("ROCK %s failed: %s", what, exc.message)
    return JSONResponse(rw.failed(f"Failed to {what}", exc.message, on_failure(exc)))


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from None


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())


# -- ids, images, records -----------------------------------------------------------------------

def _resolve(svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    """The sandbox named `sandbox_id`: our id, or the id a ROCK client chose at start."""
    try:
        return svc.get(sandbox_id)
    except NotFound:
        for record in svc.list(labels={ALIAS_LABEL: sandbox_id}):
            return record
        raise NotFound(f"no sandbox {sandbox_id!r}") from None


def _image_for(requested: str) -> tuple[str, str | None]:
    """(image to use, fallback image if that one is missing) after the operator's mapping and
    then the built-in one (ROCK's default image)."""
    mapping = {}
    for item in os.environ.get(IMAGE_MAP_ENV, "").split(","):
        name, sep, target = item.partition("=")
        if sep and name.strip() and target.strip():
            mapping[name.strip()] = target.strip()
    if requested not in mapping and requested in BUILTIN_IMAGES:
        mapping[requested] = BUILTIN_IMAGES[requested]
        log.info("ROCK start: image %r runs on %r (built-in mapping; %s changes it)",
                 requested, mapping[requested], IMAGE_MAP_ENV)
    fallback = os.environ.get(DEFAULT_IMAGE_ENV) or None
    image = mapping.get(requested, requested)
    return image, fallback if fallback != image else None


def _iso(t: float | None) -> str | None:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat() if t else None


def _memory(n: int) -> str:
    return f"{n >> 30}g" if n % (1 << 30) == 0 else f"{n >> 20}m"


def _sandbox_fields(record: SandboxRecord, sandbox_id: str) -> dict:
    limits = record.spec.limits
    return {"sandbox_id": sandbox_id, "host_name": record.spec.hostname, "host_ip": None,
            "cpus": limits.cpus, "memory": _memory(limits.memory), "disk": None}


# -- life cycle ---------------------------------------------------------------------------------

async def _start(request: Request, body: rw.StartIn) -> dict:
    svc = service(request)
    if body.sandbox_id:
        try:
            _resolve(svc, body.sandbox_id)
            raise AlreadyExists(f"sandbox id {body.sandbox_id!r} is taken; choose another or none")
        except NotFound:
            pass
    record = await _create(svc, body, _labels(request, body))
    sandbox_id = body.sandbox_id or record.id
    log.info("ROCK start: %s (image %s) is sandbox %s", sandbox_id, body.image, record.id)
    return {**_sandbox_fields(record, sandbox_id), "code": rw.CODE_OK, "exit_code": None,
            "failure_reason": None}


def _labels(request: Request, body: rw.StartIn) -> dict[str, str]:
    labels = {IMAGE_LABEL: body.image}
    if body.sandbox_id:
        labels[ALIAS_LABEL] = body.sandbox_id
    for header, label in HEADER_LABELS.items():
        if value := request.headers.get(header):
            labels[label] = value
    return labels


async def _create(svc: SandboxService, body: rw.StartIn, labels: dict[str, str]) -> SandboxRecord:
    """Create on the (mapped) image; on a missing image, on the operator's default if set."""
    image, fallback = _image_for(body.image)
    minutes = body.auto_clear_time_minutes or body.auto_clear_time
    limits = {k: v for k, v in {"memory": body.memory,
                                "cpus": body.limit_cpus or body.cpus}.items() if v}
    ttl_s = minutes * 60 if minutes and minutes > 0 else None
    if body.auto_archive_seconds is not None or body.auto_delete_seconds is not None:
        # Stopped when idle, then archived or removed (rock_deadlines.py), not removed at once.
        labels = {**labels, **rock_deadlines.labels_for(ttl_s, body.auto_archive_seconds,
                                                        body.auto_delete_seconds)}
        ttl_s = None
    req = wire.CreateSandboxRequest(image=image, limits=limits, labels=labels, ttl_s=ttl_s)
    try:
        return await svc.create(req)
    except (NotFound, InvalidRequest) as exc:
        # Runtimes differ in how they refuse an image ("no image", "bad image name"); both
        # name it, and any other refusal would recur on the fallback image as well.
        if "image" not in exc.message.lower():
            raise
        if fallback is None:
            raise type(exc)(f"{exc.message}. ROCK clients name images such as 'ubuntu:22.04'; "
                            f"the server's operator can map them: {IMAGE_MAP_ENV}="
                            f"'{body.image}=debian' or {DEFAULT_IMAGE_ENV}=debian") from None
        log.warning("ROCK start: no image %r here; using %r (%s)", image, fallback, DEFAULT_IMAGE_ENV)
        return await svc.create(req.model_copy(update={"image": fallback}))


def _stages(record: SandboxRecord) -> dict:
    """ROCK's start-up stages: the SDK's start() raises '<stage>: <message>' on a failed one."""
    pulled = {"status": "success", "message": f"image {record.spec.image} is local"}
    run = {"running": ("success", "running"), "created": ("running", "starting"),
           "stopped": ("success", "stopped")}.get(record.state, ("failed", record.error or record.state))
    return {"image_pull": pulled, "docker_run": {"status": run[0], "message": run[1]}}


async def _get_status(request: Request, sandbox_id: str) -> dict:
    svc = service(request)
    record = _resolve(svc, sandbox_id)
    labels = record.labels
    return {**_sandbox_fields(record, sandbox_id), "status": _stages(record), "port_mapping": {},
            "is_alive": record.state == "running", "state": STATES.get(record.state),
            "image": labels.get(IMAGE_LABEL, record.spec.image),
            "user_id": labels.get("rock.user_id"), "experiment_id": labels.get("rock.experiment_id"),
            "namespace": labels.get("rock.namespace"), "create_time": _iso(record.created),
            "start_time": _iso(record.created),
            **_history_fields(record, await svc.blocking(svc.registry.history, record.id))}


def _history_fields(record: SandboxRecord, history: list[tuple[str, float]]) -> dict:
    """state_history, and when the sandbox stopped or will be stopped, archived, removed."""
    out, last = [], None
    for state, at in history:
        if state != last and last is not None:   # a restart writes its state twice: one entry
            out.append({"from_state": STATES.get(last, last), "to_state": STATES.get(state, state),
                        "event": EVENTS.get(state, state), "timestamp": _iso(at)})
        last = state
    stopped = rock_deadlines.stopped_at(history)
    after = lambda start, label: _iso(start + rock_deadlines.seconds(record, label)) \
        if start is not None and rock_deadlines.seconds(record, label) is not None else None
    return {"state_history": out, "stop_time": _iso(stopped),
            "auto_stop_time": after(record.last_active, rock_deadlines.AUTO_STOP)
            if record.state == "running" else None,
            "auto_archive_time": after(stopped, rock_deadlines.AUTO_ARCHIVE),
            "auto_delete_time": after(stopped, rock_deadlines.AUTO_DELETE)}


async def _stop(request: Request, body: rw.SandboxRef) -> str:
    svc = service(request)
    record = _resolve(svc, body.sandbox_id)
    if record.state != "stopped":
        await svc.stop(record.id)
    return f"{body.sandbox_id} stopped"


async def _delete(request: Request, body: rw.SandboxRef) -> str:
    """Idempotent, as ROCK's: an unknown id is deleted already. Unlike ROCK, a running sandbox
    may be deleted too (it is stopped on the way)."""
    svc = service(request)
    try:
        record = _resolve(svc, body.sandbox_id)
    except NotFound:
        return f"{body.sandbox_id} deleted"
    await svc.remove(record.id)
    await svc.blocking(rock_archive.remove_archives, svc, record.id)
    return f"{body.sandbox_id} deleted"


# -- commands -----------------------------------------------------------------------------------

async def _execute(request: Request, body: rw.ExecuteIn) -> dict:
    """ROCK runs a list as argv and a string as one program name; a string goes through
    `bash -c` here (a superset). `env` adds to the sandbox's environment (ROCK replaces it)."""
    svc = service(request)
    argv = body.command if isinstance(body.command, list) else ["bash", "-c", body.command]
    timeout = body.timeout or EXEC_TIMEOUT_S
    record = _resolve(svc, body.sandbox_id)
    try:
        req = wire.ExecRequest(argv=argv, env=body.env or {}, cwd=body.cwd, timeout=timeout)
    except ValidationError as exc:
        raise InvalidRequest(_validation_message(exc)) from None
    result = await svc.exec(record.id, req)
    if result.timed_out:
        raise CommandTimeout(f"command {body.command!r} ran past its timeout of {timeout:g} s "
                             "and was killed")
    return {"stdout": result.stdout, "stderr": result.stderr, "exit_code": result.exit_code}


async def _create_session(request: Request, body: rw.CreateSessionIn) -> dict:
    if body.remote_user not in (None, "", "root"):
        raise InvalidRequest(f"remote_user {body.remote_user!r} is not supported here: Tumbler "
                             "sessions run as the sandbox's root user; send null")
    svc = service(request)
    sid = _resolve(svc, body.sandbox_id).id
    await svc.create_session(sid, body.session, body.env or {}, None)
    outputs = []
    for path in body.startup_source:
        result = await svc.run(sid, body.session, f"source {shlex.quote(path)}",
                               timeout=SOURCE_TIMEOUT_S)
        if result.exit_code != 0:
            await svc.close_session(sid, body.session)
            raise InvalidRequest(f"startup_source {path!r} failed with exit code "
                                 f"{result.exit_code}: {result.output.strip()}")
        outputs.append(result.output.strip())
    return {"output": "\n".join(o for o in outputs if o), "session_type": "bash"}


async def _run_in_session(request: Request, body: rw.RunInSessionIn) -> dict | rw.Envelope:
    svc = service(request)
    sid = _resolve(svc, body.sandbox_id).id
    timeout = body.timeout or RUN_TIMEOUT_S
    result = await _unless_disconnected(
        request, svc.run(sid, body.session, body.command, timeout=timeout), svc, sid, body.session)
    if result.timed_out:
        raise CommandTimeout(f"command {body.command!r} ran past its timeout of {timeout:g} s; "
                             "it was interrupted and the session lives on")
    output = result.output.strip()
    why = "" if result.session_alive else "the session's shell exited; create the session again"
    if body.check == "raise" and result.exit_code != 0:
        # ROCK's check="raise": a failed command is a Failed reply (the SDK's nohup polling
        # of `kill -0 PID` depends on it to see that the process has ended).
        return rw.failed("Failed to run in session", f"Command '{body.command}' failed with "
                         f"exit code {result.exit_code}. Here is the output: {output}")
    exit_code = None if body.check == "ignore" else result.exit_code
    return {"session_type": "bash", "output": output, "exit_code": exit_code,
            "failure_reason": why, "expect_string": ""}


async def _unless_disconnected(request: Request, work: Awaitable[T], svc: SandboxService,
                               sandbox_id: str, session: str) -> T:
    """Await `work`; if the client hangs up first (the SDK's read timeout), interrupt the
    command so the session is free for the next one, and let `work` finish unheard."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            try:
                await asyncio.wait_for(svc.interrupt(sandbox_id, session), INTERRUPT_TIMEOUT_S)
            except (TumblerError, asyncio.TimeoutError):
                pass  # the command may have ended meanwhile; nobody waits for this reply
        return await task
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _close_session(request: Request, body: rw.CloseSessionIn) -> dict:
    svc = service(request)
    await svc.close_session(_resolve(svc, body.sandbox_id).id, body.session)
    return {"session_type": "bash"}


# -- files --------------------------------------------------------------------------------------

async def _read_file(request: Request, body: rw.ReadFileIn) -> dict:
    svc = service(request)
    data = await svc.read_file(_resolve(svc, body.sandbox_id).id, body.path, 0, None)
    try:
        return {"content": data.decode(body.encoding or "utf-8", body.errors or "strict")}
    except (LookupError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{body.path}: cannot decode as {body.encoding or 'utf-8'}: {exc}") from None


async def _write_file(request: Request, body: rw.WriteFileIn) -> dict:
    svc = service(request)
    size = await svc.write_file(_resolve(svc, body.sandbox_id).id, body.path,
                                body.content.encode(), None, False)
    return {"success": True, "message": f"wrote {size} bytes to {body.path}"}


async def _upload(request: Request, _body: None) -> dict:
    fields, files = rw.parse_form(await request.body(), request.headers.get("content-type", ""))
    missing = [k for k in ("target_path", "sandbox_id") if not fields.get(k)]
    missing += [] if "file" in files else ["file"]
    if missing:
        raise InvalidRequest("upload needs form fields target_path and sandbox_id and a file part "
                             f"named 'file' (missing: {', '.join(missing)})")
    svc = service(request)
    target = fields["target_path"]
    await svc.write_file(_resolve(svc, fields["sandbox_id"]).id, target, files["file"][1], None, False)
    return {"success": True, "message": "", "file_name": posixpath.basename(target)}


# -- routes -------------------------------------------------------------------------------------

def _coded(exc: TumblerError) -> dict:
    return rw.coded_result(exc)


@router.post("/start_async")
async def start_async(request: Request):
    """Create and start a sandbox. Tumbler's create returns once the sandbox answers, so the
    SDK's first get_status poll already sees it alive (no 3 s poll)."""
    return await _answer(request, rw.StartIn, "start sandbox", _start, _coded)


@router.post("/start")
async def start(request: Request):
    return await _answer(request, rw.StartIn, "start sandbox", _start, _coded)


@router.get("/get_status")
async def get_status(request: Request, sandbox_id: str = Query(""),
                     include_all_states: bool = Query(False)):
    """ROCK's status with its state history (kept in the registry); `include_all_states`
    changes nothing here: every state is reported."""
    return await _answer(request, None, "get status",
                         lambda req, _b: _get_status(req, sandbox_id))


@router.get("/is_alive")
async def is_alive(request: Request, sandbox_id: str = Query("")):
    async def alive(req: Request, _body: None) -> dict:
        status = await _get_status(req, sandbox_id)
        return {"is_alive": status["is_alive"], "message": status["host_name"] or ""}
    return await _answer(request, None, "get is alive", alive)


@router.post("/execute")
async def execute(request: Request):
    return await _answer(request, rw.ExecuteIn, "execute command", _execute)


@router.post("/create_session")
async def create_session(request: Request):
    return await _answer(request, rw.CreateSessionIn, "create session", _create_session)


@router.post("/run_in_session")
async def run_in_session(request: Request):
    return await _answer(request, rw.RunInSessionIn, "run in session", _run_in_session)


@router.post("/close_session")
async def close_session(request: Request):
    return await _answer(request, rw.CloseSessionIn, "close session", _close_session)


@router.post("/read_file")
async def read_file(request: Request):
    """The SDK reads result.content without checking status, so a failure carries it too."""
    return await _answer(request, rw.ReadFileIn, "read file", _read_file,
                         lambda _exc: {"content": ""})


@router.post("/write_file")
async def write_file(request: Request):
    return await _answer(request, rw.WriteFileIn, "write file", _write_file)


@router.post("/upload")
async def upload(request: Request):
    """multipart/form-data: file, target_path (full destination path), sandbox_id."""
    return await _answer(request, None, "upload file", _upload)


@router.get("/get_token")
async def get_token(request: Request):
    """The SDK asks for OSS credentials after each upload; no Endpoint/Bucket means 'no OSS'
    to it, quietly (a 404 would log a traceback, a Failed a warning)."""
    return JSONResponse(rw.success({"Expiration": "1970-01-01T00:00:00Z"}))


@router.post("/stop")
async def stop(request: Request):
    return await _answer(request, rw.SandboxRef, "stop sandbox", _stop)


@router.post("/delete")
async def delete(request: Request):
    return await _answer(request, rw.SandboxRef, "delete sandbox", _delete, _coded)
