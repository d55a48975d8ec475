"""E2B's control plane (e2b-dev/E2B: spec/openapi.yml) over SandboxService, so that the official
`e2b` SDK, unmodified, manages Tumbler's sandboxes: create, list, get, kill, timeout, pause,
resume, connect, snapshots, fork, metrics. Its data plane (commands, pty, files) is
e2b_envd.py. docs/E2B_COMPAT.md has the contract and what differs.

Mapping: a template names an image (`base`, E2B's default, is the server's default image; a
snapshot's id is the image it made); metadata are labels; `timeout` is the sandbox's max
lifetime, counted from now (create, set_timeout, connect and resume set it again); states are
running or paused (a stopped sandbox shows as paused and is started by resume/connect).
The API key (`X-API-Key`) is one of the server's tokens; each sandbox's envd access token is
derived from it (server/e2b_auth.py).
"""
from __future__ import annotations

import datetime
import json
import math
import secrets
import time
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from tumbler import wire
from tumbler.errors import InvalidRequest, TumblerError
from tumbler.runtime.spec import SandboxState
from tumbler.server import e2b_auth, pause_fork
from tumbler.server.routes import service
from tumbler.server.routes.e2b_envd import ENVD_VERSION
from tumbler.server.service import SandboxService

router = APIRouter(tags=["E2B-compatible"], include_in_schema=False)

TEMPLATE_LABEL = "e2b.template"
BASE_TEMPLATES = {"base", ""}
DEFAULT_TIMEOUT_S = 300           # the SDK's default
MAX_TIMEOUT_S = 24 * 3600
LIST_LIMIT = 100
FAR_FUTURE = 4102444800.0         # 2100-01-01: the end of a sandbox with no deadline


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"code": status, "message": message}), status_code=status,
                    media_type="application/json")


async def _answer(coro) -> Response:
    """Run a handler; Tumbler's errors become E2B's `{code, message}` with their status."""
    try:
        return await coro
    except TumblerError as exc:
        return _error(exc.status, exc.message)


async def _body(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidRequest("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return value


def _timeout(body: dict, key: str = "timeout") -> int:
    value = body.get(key, DEFAULT_TIMEOUT_S)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TIMEOUT_S:
        raise InvalidRequest(f"{key} must be whole seconds between 1 and {MAX_TIMEOUT_S}")
    return value


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat().replace(
        "+00:00", "Z")


def _state(record) -> str:
    return "running" if record.state == SandboxState.RUNNING else "paused"


def _sandbox(request: Request, record) -> dict:
    """E2B's `Sandbox`: what create, connect and resume answer."""
    out = {"templateID": record.labels.get(TEMPLATE_LABEL, record.spec.image),
           "sandboxID": record.id, "clientID": "tumbler", "envdVersion": ENVD_VERSION}
    token = e2b_auth.access_token(request.app.state.config.tokens, record.id)
    if token:
        out["envdAccessToken"] = token
    return out


def _listed(record) -> dict:
    """E2B's `ListedSandbox` (and the body of `SandboxDetail`)."""
    limits = record.spec.limits
    metadata = {k: v for k, v in record.labels.items() if k != TEMPLATE_LABEL}
    return {"templateID": record.labels.get(TEMPLATE_LABEL, record.spec.image),
            "sandboxID": record.id, "clientID": "tumbler", "startedAt": _iso(record.created),
            "endAt": _iso(record.expires_at or FAR_FUTURE),
            "cpuCount": max(1, math.ceil(limits.cpus)),
            "memoryMB": limits.memory >> 20, "diskSizeMB": limits.disk >> 20,
            "state": _state(record), "envdVersion": ENVD_VERSION, "metadata": metadata}


def _json(value, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(value), status_code=status, media_type="application/json",
                    headers=headers)


async def _set_deadline(svc: SandboxService, record, seconds: float) -> None:
    record.expires_at = time.time() + seconds
    await svc.blocking(svc.registry.set_expires, record.id, record.expires_at)


# -- create, list, get, kill -----------------------------------------------------------------

async def _create(request: Request) -> Response:
    svc, body = service(request), await _body(request)
    template = body.get("templateID", "base")
    if not isinstance(template, str):
        raise InvalidRequest("templateID must be a string")
    metadata, env = body.get("metadata") or {}, body.get("envVars") or {}
    if not isinstance(metadata, dict) or not isinstance(env, dict):
        raise InvalidRequest("metadata and envVars must be objects of strings")
    image = wire.CreateSandboxRequest.model_fields["image"].default
    if template not in BASE_TEMPLATES:
        image = template
    timeout = _timeout(body)
    labels = {**{str(k): str(v) for k, v in metadata.items()}, TEMPLATE_LABEL: template or "base"}
    record = await svc.create(wire.CreateSandboxRequest(
        image=image, env={str(k): str(v) for k, v in env.items()}, labels=labels,
        max_lifetime_s=float(timeout)))
    return _json(_sandbox(request, record), 201)


@router.post("/sandboxes")
async def create_v1(request: Request):
    return await _answer(_create(request))


@router.post("/v2/sandboxes")
async def create_v2(request: Request):
    return await _answer(_create(request))


def _metadata_filter(request: Request) -> dict[str, str]:
    out = {}
    for value in request.query_params.getlist("metadata"):
        out.update(parse_qsl(value, keep_blank_values=True))
    return out


def _matching(request: Request, states: set[str]) -> list:
    svc, wanted = service(request), _metadata_filter(request)
    return sorted((r for r in svc.list() if _state(r) in states
                   and all(r.labels.get(k) == v for k, v in wanted.items())),
                  key=lambda r: (r.created, r.id))


@router.get("/sandboxes")
async def list_v1(request: Request):
    return _json([_listed(r) for r in _matching(request, {"running"})])


@router.get("/v2/sandboxes")
async def list_v2(request: Request):
    async def go():
        states = set()
        for value in request.query_params.getlist("state") or ["running,paused"]:
            states.update(s for s in value.split(",") if s)
        unknown = states - {"running", "paused"}
        if unknown:
            raise InvalidRequest(f"state must be running or paused, not {sorted(unknown)}")
        try:
            limit = int(request.query_params.get("limit", LIST_LIMIT))
            start = int(request.query_params.get("nextToken") or 0)
        except ValueError:
            raise InvalidRequest("limit and nextToken must be integers") from None
        if not 1 <= limit <= 1000 or start < 0:
            raise InvalidRequest("limit must be between 1 and 1000, nextToken >= 0")
        records = _matching(request, states)
        page = records[start:start + limit]
        headers = {"x-next-token": str(start + limit)} if start + limit < len(records) else {}
        return _json([_listed(r) for r in page], headers=headers)
    return await _answer(go())


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request):
    async def go():
        record = service(request).get(sandbox_id)
        detail = _listed(record)
        token = e2b_auth.access_token(request.app.state.config.tokens, record.id)
        if token:
            detail["envdAccessToken"] = token
        return _json(detail)
    return await _answer(go())


@router.delete("/sandboxes/{sandbox_id}")
async def kill_sandbox(sandbox_id: str, request: Request):
    async def go():
        await service(request).remove(sandbox_id)
        return Response(status_code=204)
    return await _answer(go())


# -- deadlines -------------------------------------------------------------------------------

@router.post("/sandboxes/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, request: Request):
    async def go():
        svc, body = service(request), await _body(request)
        if "timeout" not in body:
            raise InvalidRequest("timeout (seconds) is required")
        await _set_deadline(svc, svc.get(sandbox_id), _timeout(body))
        return Response(status_code=204)
    return await _answer(go())


@router.post("/sandboxes/{sandbox_id}/refreshes")
async def refresh(sandbox_id: str, request: Request):
    async def go():
        svc, body = service(request), await _body(request)
        record = svc.get(sandbox_id)
        duration = _timeout({"timeout": body.get("duration", DEFAULT_TIMEOUT_S)})
        if record.expires_at is None or record.expires_at < time.time() + duration:
            await _set_deadline(svc, record, duration)
        return Response(status_code=204)
    return await _answer(go())


# -- pause, resume, connect ------------------------------------------------------------------

@router.post("/sandboxes/{sandbox_id}/pause")
async def pause(sandbox_id: str, request: Request):
    async def go():
        svc = service(request)
        record = svc.get(sandbox_id)
        if record.state != SandboxState.RUNNING:
            return _error(409, f"sandbox {sandbox_id} is {record.state}, not running")
        await pause_fork.pause(svc, sandbox_id)
        return Response(status_code=204)
    return await _answer(go())


async def _wake(request: Request, sandbox_id: str, timeout: int):
    """Resume a paused sandbox, start a stopped one; set its deadline `timeout` s from now."""
    svc = service(request)
    record = svc.get(sandbox_id)
    if record.state == SandboxState.PAUSED:
        record = await pause_fork.resume(svc, sandbox_id)
    elif record.state != SandboxState.RUNNING:
        record = await svc.start(sandbox_id)
    await _set_deadline(svc, record, timeout)
    return record


@router.post("/sandboxes/{sandbox_id}/resume")
async def resume(sandbox_id: str, request: Request):
    async def go():
        body = await _body(request)
        record = service(request).get(sandbox_id)
        if record.state == SandboxState.RUNNING:
            return _error(409, f"sandbox {sandbox_id} is running, not paused")
        return _json(_sandbox(request, await _wake(request, sandbox_id, _timeout(body))), 201)
    return await _answer(go())


async def _connect(request: Request, sandbox_id: str) -> Response:
    body = await _body(request)
    was_running = service(request).get(sandbox_id).state == SandboxState.RUNNING
    record = await _wake(request, sandbox_id, _timeout(body))
    return _json(_sandbox(request, record), 200 if was_running else 201)


@router.post("/sandboxes/{sandbox_id}/connect")
async def connect_v1(sandbox_id: str, request: Request):
    return await _answer(_connect(request, sandbox_id))


@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect_v2(sandbox_id: str, request: Request):
    return await _answer(_connect(request, sandbox_id))


# -- snapshots, fork, metrics ----------------------------------------------------------------

@router.post("/sandboxes/{sandbox_id}/snapshots")
async def snapshot(sandbox_id: str, request: Request):
    async def go():
        body = await _body(request)
        name = body.get("name") or f"snap{secrets.token_hex(6)}"
        if not isinstance(name, str):
            raise InvalidRequest("name must be a string")
        image = await service(request).snapshot(sandbox_id, name)
        return _json({"snapshotID": image, "names": [image]}, 201)
    return await _answer(go())


@router.post("/sandboxes/{sandbox_id}/fork")
async def fork(sandbox_id: str, request: Request):
    async def go():
        svc, body = service(request), await _body(request)
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidRequest("count must be an integer")
        timeout = _timeout(body)
        records = await pause_fork.fork(svc, sandbox_id, count)
        for record in records:
            await _set_deadline(svc, record, timeout)
        return _json([{"sandbox": _sandbox(request, r)} for r in records], 201)
    return await _answer(go())


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(sandbox_id: str, request: Request):
    async def go():
        svc = service(request)
        record = svc.get(sandbox_id)
        if record.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
            return _json([])
        stats = await svc.stats(sandbox_id)
        now = time.time()
        limits = record.spec.limits
        cpus = max(1, math.ceil(limits.cpus))
        used_pct = 100.0 * stats.cpu_seconds / max(now - record.created, 1e-3) / cpus
        return _json([{"timestamp": _iso(now), "timestampUnix": int(now), "cpuCount": cpus,
                       "cpuUsedPct": round(min(used_pct, 100.0), 2),
                       "memUsed": stats.memory_bytes, "memTotal": stats.memory_limit_bytes,
                       "memCache": 0, "diskUsed": 0, "diskTotal": limits.disk}])
    return await _answer(go())
