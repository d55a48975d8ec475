"""ROCK's life-cycle routes beyond start/stop/delete (rl-rock 1.11.0's SDK and its admin's API):
restart (of a stopped or an archived sandbox), archive, commit (to an image) and its status,
the sandbox list with filters and pages, and batch status. The envelope and the status object
are rock.py's; docs/ROCK_COMPAT.md has the contract.
"""
from __future__ import annotations

import re
import time

from fastapi import APIRouter, Request
from pydantic import Field

from tumbler.errors import InvalidRequest, NotFound, TumblerError
from tumbler.runtime.spec import SandboxState
from tumbler.server import rock_archive
from tumbler.server.routes import rock, service
from tumbler.server.routes import rock_wire as rw

router = APIRouter(prefix=rw.PREFIX, tags=["ROCK-compatible"])
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000

class CommitIn(rw.SandboxRef):
    image_tag: str
    username: str | None = None
    password: str | None = None


class BatchIn(rw.RockRequest):
    sandbox_ids: list[str] = Field(max_length=MAX_BATCH)


# -- restart and archive ------------------------------------------------------------------------

async def _restart(request: Request, body: rw.SandboxRef) -> dict:
    svc = service(request)
    record = rock._resolve(svc, body.sandbox_id)
    if record.state == SandboxState.ARCHIVED:
        record = await rock_archive.restore(svc, record.id)
    elif record.state == SandboxState.RUNNING:
        raise InvalidRequest(f"sandbox {body.sandbox_id} is running; stop it before a restart")
    else:
        record = await svc.start(record.id)
    return {**rock._sandbox_fields(record, body.sandbox_id), "code": rw.CODE_OK,
            "exit_code": None, "failure_reason": None}


@router.post("/restart")
async def restart(request: Request):
    """Start a stopped sandbox again (its files kept), or restore an archived one."""
    return await rock._answer(request, rw.SandboxRef, "restart sandbox", _restart, rock._coded)


@router.post("/sandboxes/{sandbox_id}/restart")
async def restart_by_path(sandbox_id: str, request: Request):
    return await rock._answer(request, None, "restart sandbox",
                              lambda req, _b: _restart(req, rw.SandboxRef(sandbox_id=sandbox_id)),
                              rock._coded)


@router.post("/sandboxes/{sandbox_id}/archive")
async def archive(sandbox_id: str, request: Request):
    """Save a stopped sandbox's files to an archive and free everything else it held."""
    async def go(req: Request, _body) -> str:
        svc = service(req)
        await rock_archive.archive(svc, rock._resolve(svc, sandbox_id).id)
        return f"{sandbox_id} archived"
    return await rock._answer(request, None, "archive sandbox", go, rock._coded)


# -- commit -------------------------------------------------------------------------------------

def local_image_name(image_tag: str) -> str:
    """The store's name for a ROCK image tag ("registry/repo:tag" -> "registry-repo-tag")."""
    name = re.sub(r"[^a-z0-9._-]+", "-", image_tag.lower()).strip("-._")[:64]
    if not name:
        raise InvalidRequest(f"image_tag {image_tag!r} has no letters or digits to name an image")
    return name


def _commits(request: Request) -> dict[str, dict]:
    state = request.app.state
    if not hasattr(state, "rock_commits"):
        state.rock_commits = {}
    return state.rock_commits


async def _commit(request: Request, body: CommitIn) -> dict:
    """Synchronous: the image is made when this answers (phase SUCCEEDED or FAILED). No
    registry is pushed to; username/password are not used (the image stays on this node)."""
    svc = service(request)
    record = rock._resolve(svc, body.sandbox_id)
    name = local_image_name(body.image_tag)
    status = {"sandbox_id": body.sandbox_id, "image_tag": name,
              "started_at": rock._iso(time.time()), "phase": "RUNNING"}
    try:
        await svc.snapshot(record.id, name)
        status.update(phase="SUCCEEDED", exit_code=0)
    except TumblerError as exc:
        status.update(phase="FAILED", exit_code=1, failed_stage="commit",
                      error_code="COMMIT_CONFLICT" if exc.kind == "exists" else "COMMIT_FAILED",
                      error_message=exc.message)
    status["completed_at"] = rock._iso(time.time())
    _commits(request)[body.sandbox_id] = status
    return status


@router.post("/commit")
async def commit(request: Request):
    """Save the sandbox's files as an image named after image_tag (local_image_name)."""
    return await rock._answer(request, CommitIn, "commit sandbox", _commit)


@router.get("/commit/{sandbox_id}")
async def commit_status(sandbox_id: str, request: Request):
    async def go(req: Request, _body) -> dict:
        status = _commits(req).get(sandbox_id)
        if status is None:
            raise NotFound(f"no commit of sandbox {sandbox_id!r} on this server")
        return status
    return await rock._answer(request, None, "get commit status", go)


# -- list and batch status ----------------------------------------------------------------------

FILTER_LABELS = {"user_id": "rock.user_id", "experiment_id": "rock.experiment_id",
                 "namespace": "rock.namespace", "image": rock.IMAGE_LABEL}


def _page_args(request: Request) -> tuple[int, int]:
    try:
        page = int(request.query_params.get("page", 1))
        size = int(request.query_params.get("page_size", 100))
    except ValueError:
        raise InvalidRequest("page and page_size must be integers") from None
    if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page must be >= 1 and page_size between 1 and {MAX_PAGE_SIZE}")
    return page, size


async def _list(request: Request, _body) -> dict:
    """Filters: user_id, experiment_id, namespace, image (as the client named it), state
    (ROCK's names: pending, running, stopped, archived); pages from 1."""
    svc, params = service(request), request.query_params
    page, size = _page_args(request)
    records = svc.list()
    for key, label in FILTER_LABELS.items():
        if params.get(key):
            records = [r for r in records if r.labels.get(label, r.spec.image if key == "image"
                                                           else None) == params[key]]
    if params.get("state"):
        records = [r for r in records if rock.STATES.get(r.state) == params["state"]]
    records.sort(key=lambda r: (r.created, r.id))
    chunk = records[(page - 1) * size:page * size]
    items = [await _status(request, r.labels.get(rock.ALIAS_LABEL, r.id)) for r in chunk]
    return {"items": items, "total": len(records), "has_more": page * size < len(records)}


async def _status(request: Request, sandbox_id: str) -> dict:
    return await rock._get_status(request, sandbox_id)


@router.get("/sandboxes")
async def list_sandboxes(request: Request):
    return await rock._answer(request, None, "list sandboxes", _list)


@router.post("/sandboxes/batch")
async def batch_status(request: Request):
    """Each id's status; an unknown id is left out (ROCK's admin answers only the ones it has)."""
    async def go(req: Request, body: BatchIn) -> dict:
        statuses = []
        for sandbox_id in body.sandbox_ids:
            try:
                statuses.append(await _status(req, sandbox_id))
            except NotFound:
                continue
        return {"statuses": statuses}
    return await rock._answer(request, BatchIn, "batch get sandbox status", go)

