"""E2B's in-sandbox API (envd) served by the server for every sandbox: what the official `e2b`
SDK's commands, pty and files call, translated to the in-sandbox agent's ops.

The SDK sends every call to one URL (E2B_SANDBOX_URL = this server) and names the sandbox in
the `E2b-Sandbox-Id` header. `process.Process` maps onto the agent's started processes
(agent/jobs.py), `filesystem.Filesystem` and `/files` onto its file ops. The user named by the
SDK's Basic auth runs the process when the sandbox has that account; E2B's default, "user", runs
as root in an image without one. Relative paths are relative to that user's home (/root).
Watchers are server-side: each look lists the directory (and, if recursive, the ones under it,
at most WATCH_MAX_ENTRIES entries) and reports what changed since the last look.
docs/E2B_COMPAT.md has the contract.
"""
from __future__ import annotations

import asyncio
import base64
import datetime
import json
import posixpath
import secrets
import stat as stat_mod
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from tumbler import wire
from tumbler.errors import InvalidRequest, NotFound, TumblerError
from tumbler.models import FileInfo
from tumbler.server.routes import service
from tumbler.server.routes.e2b_connect import (END_STREAM, STREAM_TYPE, ConnectError, envelope,
                                               error_response, stream_error, stream_response,
                                               unary_request, unary_response, unenvelope)
from tumbler.server.service import SandboxService

router = APIRouter(tags=["E2B-compatible (envd)"], include_in_schema=False)

SANDBOX_HEADER = "e2b-sandbox-id"
ENVD_VERSION = "0.5.7"       # what we claim: octet-stream uploads, stdin, close_stdin; no file metadata
HOME = "/root"
POLL_WAIT_S = 15.0           # seconds one look at a process's output waits for some
POLL_TIMEOUT_S = 40.0
WATCH_POLL_S = 0.2           # seconds between looks of a WatchDir stream
WATCH_MAX_ENTRIES = 5000
MAX_WATCHERS = 1024
OUTPUT_KINDS = ("stdout", "stderr", "pty")
SIGNALS = {"SIGNAL_SIGTERM": 15, "SIGNAL_SIGKILL": 9, 15: 15, 9: 9}
FILE_TYPES = {"file": "FILE_TYPE_FILE", "dir": "FILE_TYPE_DIRECTORY",
              "symlink": "FILE_TYPE_SYMLINK"}


def sandbox_of(request: Request) -> tuple[SandboxService, str]:
    sandbox_id = request.headers.get(SANDBOX_HEADER)
    if not sandbox_id:
        raise ConnectError("invalid_argument", "no E2b-Sandbox-Id header: set E2B_SANDBOX_URL to "
                           "this server (docs/E2B_COMPAT.md)")
    svc = service(request)
    try:
        svc.get(sandbox_id)
    except NotFound as exc:
        raise ConnectError("not_found", exc.message) from None
    return svc, sandbox_id


def user_of(request: Request) -> str | None:
    """The user the SDK's Basic auth names (`Authorization: Basic base64("user:")`)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value).decode().partition(":")[0] or None
    except (ValueError, UnicodeDecodeError):
        raise ConnectError("unauthenticated", "Basic auth is not base64 of 'user:'") from None


def resolve(path: str) -> str:
    if not isinstance(path, str) or not path or "\0" in path:
        raise ConnectError("invalid_argument", f"bad path {path!r}")
    return posixpath.normpath(posixpath.join(HOME, path))


# -- the routes ------------------------------------------------------------------------------

@router.get("/health", status_code=204)
async def health():
    return Response(status_code=204)


@router.post("/process.Process/{method}")
async def process_rpc(method: str, request: Request):
    return await _dispatch(PROCESS, method, request)


@router.post("/filesystem.Filesystem/{method}")
async def filesystem_rpc(method: str, request: Request):
    return await _dispatch(FILESYSTEM, method, request)


async def _dispatch(table: dict, method: str, request: Request):
    entry = table.get(method)
    streaming = request.headers.get("content-type", "").startswith(STREAM_TYPE)
    if entry is None:
        err = ConnectError("unimplemented", f"no method {method}")
        return stream_error(err) if streaming else error_response(err)
    kind, handler = entry
    body = await request.body()
    try:
        svc, sandbox_id = sandbox_of(request)
        if kind == "client_stream":
            return await _client_stream(handler, svc, sandbox_id, request, body)
        message = unary_request(body, request.headers.get("content-type", ""))
        if kind == "server_stream":
            return stream_response(handler(svc, sandbox_id, message, request))
        return unary_response(await handler(svc, sandbox_id, message, request))
    except ConnectError as err:
        return stream_error(err) if kind != "unary" else error_response(err)
    except TumblerError as exc:
        err = ConnectError.of(exc)
        return stream_error(err) if kind != "unary" else error_response(err)


async def _client_stream(handler, svc, sandbox_id, request, body) -> Response:
    try:
        await handler(svc, sandbox_id, unenvelope(body), request)
        frames = envelope({}) + envelope({}, END_STREAM)
    except ConnectError as err:
        frames = envelope({"error": err.body()}, END_STREAM)
    except TumblerError as exc:
        frames = envelope({"error": ConnectError.of(exc).body()}, END_STREAM)
    return Response(frames, media_type=STREAM_TYPE)


# -- process.Process -------------------------------------------------------------------------

def _selector(message: dict) -> dict:
    sel = message.get("process") or {}
    if sel.get("pid") is not None:
        return {"pid": _int(sel["pid"], "pid")}
    if sel.get("tag") is not None:
        return {"tag": str(sel["tag"])}
    raise ConnectError("invalid_argument", "process selector needs a pid or a tag")


def _int(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConnectError("invalid_argument", f"{what} must be an integer, not {value!r}") from None


async def _pid_of(svc, sandbox_id, selector: dict) -> int:
    if "pid" in selector:
        return selector["pid"]
    result, _ = await svc.call(sandbox_id, "job.events", {**selector, "after": -1, "wait": 0})
    return _int(result.get("pid"), "pid")


async def start(svc: SandboxService, sandbox_id: str, message: dict, request: Request):
    config = message.get("process") or {}
    cmd = config.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ConnectError("invalid_argument", "process.cmd must be a non-empty string")
    args = config.get("args") or []
    envs = {**_sandbox_env(svc, sandbox_id), **(config.get("envs") or {})}
    pty = message.get("pty")
    job = {"argv": [cmd, *map(str, args)], "env": envs, "user": user_of(request),
           "tag": message.get("tag"), "stdin": bool(message.get("stdin", True)),
           "pty": (pty.get("size") or {}) if isinstance(pty, dict) else None}
    if config.get("cwd"):
        job["cwd"] = resolve(config["cwd"])
    result, _ = await svc.call(sandbox_id, "job.start", job)
    pid = _int(result.get("pid"), "pid")
    yield {"event": {"start": {"pid": pid}}}
    async for event in _events(svc, sandbox_id, pid, 0):
        yield event


async def connect(svc: SandboxService, sandbox_id: str, message: dict, request: Request):
    pid = await _pid_of(svc, sandbox_id, _selector(message))
    yield {"event": {"start": {"pid": pid}}}
    async for event in _events(svc, sandbox_id, pid, -1):
        yield event


async def _events(svc: SandboxService, sandbox_id: str, pid: int, after: int) -> AsyncIterator[dict]:
    """The process's output from event `after` on, as envd's events, then its end."""
    while True:
        result, body = await svc.call(sandbox_id, "job.events",
                                      {"pid": pid, "after": after, "wait": POLL_WAIT_S},
                                      timeout=POLL_TIMEOUT_S)
        pos = 0
        kinds, sizes = result.get("kinds") or [], result.get("sizes") or []
        for kind, size in zip(kinds, sizes):
            if kind not in OUTPUT_KINDS or not isinstance(size, int) or size < 0:
                raise ConnectError("internal", "the sandbox's agent sent a malformed event")
            yield {"event": {"data": {kind: wire.b64(body[pos:pos + size])}}}
            pos += size
        after = _int(result.get("next"), "next")
        end = result.get("end")
        if isinstance(end, dict):
            out = {"exitCode": _int(end.get("exit_code"), "exit_code"),
                   "exited": bool(end.get("exited")), "status": str(end.get("status", ""))}
            yield {"event": {"end": out}}
            return
        if not kinds:
            yield {"event": {"keepalive": {}}}


async def list_processes(svc, sandbox_id, message, request):
    result, _ = await svc.call(sandbox_id, "job.list", {})
    return {"processes": [
        {"pid": j["pid"], **({"tag": j["tag"]} if j.get("tag") else {}),
         "config": {"cmd": j["argv"][0], "args": j["argv"][1:], "envs": j.get("envs") or {},
                    "cwd": j.get("cwd")}} for j in result.get("jobs", [])]}


async def send_input(svc, sandbox_id, message, request):
    await _input(svc, sandbox_id, _selector(message), message.get("input") or {})
    return {}


async def _input(svc, sandbox_id, selector: dict, data: dict) -> None:
    raw = data.get("pty", data.get("stdin"))
    try:
        chunk = base64.b64decode(raw or "", validate=True)
    except ValueError:
        raise ConnectError("invalid_argument", "input must be base64") from None
    pid = await _pid_of(svc, sandbox_id, selector)
    await svc.call(sandbox_id, "job.input", {"pid": pid}, chunk)


async def stream_input(svc, sandbox_id, messages: list[dict], request):
    selector = None
    for message in messages:
        if "start" in message:
            selector = _selector(message["start"])
        elif "data" in message:
            if selector is None:
                raise ConnectError("invalid_argument", "StreamInput data before its start")
            await _input(svc, sandbox_id, selector, (message["data"] or {}).get("input") or {})


async def send_signal(svc, sandbox_id, message, request):
    sig = SIGNALS.get(message.get("signal"))
    if sig is None:
        raise ConnectError("invalid_argument", f"unknown signal {message.get('signal')!r}")
    pid = await _pid_of(svc, sandbox_id, _selector(message))
    await svc.call(sandbox_id, "job.signal", {"pid": pid, "signal": sig})
    return {}


async def close_stdin(svc, sandbox_id, message, request):
    pid = await _pid_of(svc, sandbox_id, _selector(message))
    await svc.call(sandbox_id, "job.close_stdin", {"pid": pid})
    return {}


async def update(svc, sandbox_id, message, request):
    size = ((message.get("pty") or {}).get("size")) or {}
    pid = await _pid_of(svc, sandbox_id, _selector(message))
    await svc.call(sandbox_id, "job.resize", {"pid": pid, "cols": size.get("cols"),
                                               "rows": size.get("rows")})
    return {}


def _sandbox_env(svc: SandboxService, sandbox_id: str) -> dict[str, str]:
    return dict(svc.get(sandbox_id).spec.env)


PROCESS = {"Start": ("server_stream", start), "Connect": ("server_stream", connect),
           "List": ("unary", list_processes), "SendInput": ("unary", send_input),
           "StreamInput": ("client_stream", stream_input), "SendSignal": ("unary", send_signal),
           "CloseStdin": ("unary", close_stdin), "Update": ("unary", update)}


# -- filesystem.Filesystem -------------------------------------------------------------------

def entry_of(info: FileInfo) -> dict:
    path = info.path
    kind = FILE_TYPES.get(info.type, "FILE_TYPE_UNSPECIFIED")
    return {"name": posixpath.basename(path) or path, "type": kind, "path": path,
            "size": str(info.size), "mode": info.mode & 0o7777,
            "permissions": stat_mod.filemode(info.mode), "owner": _name(info.uid),
            "group": _name(info.gid), "isSymlink": info.type == "symlink",
            "modifiedTime": datetime.datetime.fromtimestamp(
                info.mtime, datetime.timezone.utc).isoformat().replace("+00:00", "Z")}


def _name(uid: int) -> str:
    return "root" if uid == 0 else str(uid)


async def stat(svc, sandbox_id, message, request):
    return {"entry": entry_of(await svc.stat(sandbox_id, resolve(message.get("path"))))}


async def make_dir(svc, sandbox_id, message, request):
    path = resolve(message.get("path"))
    try:
        await svc.stat(sandbox_id, path)
    except NotFound:
        await svc.mkdir(sandbox_id, path, True)
        return {"entry": entry_of(await svc.stat(sandbox_id, path))}
    raise ConnectError("already_exists", f"{path} exists")


async def move(svc, sandbox_id, message, request):
    src, dst = resolve(message.get("source")), resolve(message.get("destination"))
    await svc.stat(sandbox_id, src)
    result = await svc.exec(sandbox_id, wire.ExecRequest(argv=["mv", "-T", "--", src, dst]))
    if result.exit_code != 0:
        raise ConnectError("invalid_argument", f"move failed: {result.stderr.strip()[:500]}")
    return {"entry": entry_of(await svc.stat(sandbox_id, dst))}


async def list_dir(svc, sandbox_id, message, request):
    depth = max(1, _int(message.get("depth") or 1, "depth"))
    path = resolve(message.get("path"))
    entries = await _walk(svc, sandbox_id, path, depth)
    return {"entries": [entry_of(e) for e in entries]}


async def _walk(svc, sandbox_id, path: str, depth: int) -> list[FileInfo]:
    """Entries under `path`, `depth` levels deep (1: its own), at most WATCH_MAX_ENTRIES."""
    out, level = [], [path]
    for _ in range(depth):
        nxt = []
        for directory in level:
            for info in await svc.list_dir(sandbox_id, directory):
                out.append(info)
                if info.type == "dir":
                    nxt.append(info.path)
                if len(out) >= WATCH_MAX_ENTRIES:
                    return out
        level = nxt
    return out


async def remove(svc, sandbox_id, message, request):
    await svc.remove_file(sandbox_id, resolve(message.get("path")), True)
    return {}


@dataclass
class Watcher:
    sandbox_id: str
    path: str
    recursive: bool
    seen: dict[str, tuple] = field(default_factory=dict)
    used: float = field(default_factory=time.monotonic)


async def _look(svc, watcher: Watcher) -> list[dict]:
    """What changed under the watcher's path since its last look, as envd's events."""
    infos = await _walk(svc, watcher.sandbox_id, watcher.path, 64 if watcher.recursive else 1)
    now = {i.path: (i.type, i.size, i.mtime, i.mode) for i in infos}
    events = []
    for path, sig in now.items():
        old = watcher.seen.get(path)
        if old is None:
            events.append(("EVENT_TYPE_CREATE", path))
        elif old[1:3] != sig[1:3]:
            events.append(("EVENT_TYPE_WRITE", path))
        elif old[3] != sig[3]:
            events.append(("EVENT_TYPE_CHMOD", path))
    events += [("EVENT_TYPE_REMOVE", p) for p in watcher.seen if p not in now]
    watcher.seen = now
    return [{"name": posixpath.relpath(path, watcher.path), "type": kind} for kind, path in events]


async def watch_dir(svc, sandbox_id, message, request):
    watcher = Watcher(sandbox_id, resolve(message.get("path")), bool(message.get("recursive")))
    await svc.stat(sandbox_id, watcher.path)
    await _look(svc, watcher)
    yield {"start": {}}
    while not await request.is_disconnected():
        for event in await _look(svc, watcher):
            yield {"filesystem": event}
        await asyncio.sleep(WATCH_POLL_S)


def _watchers(request: Request) -> dict[str, Watcher]:
    state = request.app.state
    if not hasattr(state, "e2b_watchers"):
        state.e2b_watchers = {}
    return state.e2b_watchers


async def create_watcher(svc, sandbox_id, message, request):
    watchers = _watchers(request)
    if len(watchers) >= MAX_WATCHERS:   # the oldest unused one goes
        del watchers[min(watchers, key=lambda k: watchers[k].used)]
    watcher = Watcher(sandbox_id, resolve(message.get("path")), bool(message.get("recursive")))
    await svc.stat(sandbox_id, watcher.path)
    await _look(svc, watcher)
    watcher_id = secrets.token_hex(8)
    watchers[watcher_id] = watcher
    return {"watcherId": watcher_id}


def _watcher(request, sandbox_id: str, message: dict) -> tuple[str, Watcher]:
    watcher_id = str(message.get("watcherId", ""))
    watcher = _watchers(request).get(watcher_id)
    if watcher is None or watcher.sandbox_id != sandbox_id:
        raise ConnectError("not_found", f"no watcher {watcher_id!r}")
    watcher.used = time.monotonic()
    return watcher_id, watcher


async def get_watcher_events(svc, sandbox_id, message, request):
    _, watcher = _watcher(request, sandbox_id, message)
    return {"events": await _look(svc, watcher)}


async def remove_watcher(svc, sandbox_id, message, request):
    watcher_id, _ = _watcher(request, sandbox_id, message)
    _watchers(request).pop(watcher_id, None)
    return {}


FILESYSTEM = {"Stat": ("unary", stat), "MakeDir": ("unary", make_dir), "Move": ("unary", move),
              "ListDir": ("unary", list_dir), "Remove": ("unary", remove),
              "WatchDir": ("server_stream", watch_dir),
              "CreateWatcher": ("unary", create_watcher),
              "GetWatcherEvents": ("unary", get_watcher_events),
              "RemoveWatcher": ("unary", remove_watcher)}


# -- /files ----------------------------------------------------------------------------------

def _files_error(status: int, message: str) -> Response:
    return Response(json.dumps({"code": status, "message": message}), status_code=status,
                    media_type="application/json")


async def _files_call(request: Request, fn: Callable[[SandboxService, str], Awaitable[Response]]):
    try:
        svc, sandbox_id = sandbox_of(request)
        return await fn(svc, sandbox_id)
    except ConnectError as err:
        return _files_error(404 if err.code == "not_found" else 400, err.message)
    except TumblerError as exc:
        return _files_error(exc.status, exc.message)


@router.get("/files")
async def download(request: Request, path: str):
    async def go(svc, sandbox_id):
        chunks = await svc.read_file_chunks(sandbox_id, resolve(path), 0, None)
        return StreamingResponse(chunks, media_type="application/octet-stream")
    return await _files_call(request, go)


@router.post("/files")
async def upload(request: Request, path: str | None = None):
    async def go(svc, sandbox_id):
        written = []
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            parts = form.getlist("file")
            if not parts:
                raise InvalidRequest("multipart upload with no 'file' part")
            for part in parts:
                target = path if path and len(parts) == 1 else part.filename
                written.append(await _write(svc, sandbox_id, target, await part.read()))
        else:
            if not path:
                raise InvalidRequest("an octet-stream upload needs ?path=")
            written.append(await _write(svc, sandbox_id, path, await request.body()))
        return Response(json.dumps(written), media_type="application/json")
    return await _files_call(request, go)


async def _write(svc, sandbox_id, path: str | None, data: bytes) -> dict:
    target = resolve(path or "")
    await svc.write_file(sandbox_id, target, data, None, False)
    return {"name": posixpath.basename(target), "type": "file", "path": target}

