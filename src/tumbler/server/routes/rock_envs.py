"""ROCK's env routes, answered as ROCK answers them (rl-rock 1.11.0; contract: docs/ROCK_COMPAT.md,
"Env routes"). Two sets, both translated to the agent's env ops (`tumbler.agent.envhost`):

- `/env/make|reset|step|close|list`: the in-sandbox server's (rocklet's) routes. One env per
  `sandbox_id`, which here names a Tumbler sandbox (our id, or the id a ROCK client chose at
  start); replies are rocklet's plain models; a failure is HTTP 511
  `{"rockletexception": {message, class_path, traceback, extra_info}}` with a builtins class_path
  (ROCK's client re-raises it as that class); a malformed body is FastAPI's 422 `{"detail": [...]}`.
- `/apis/v1/envs/gem/make|reset|step|close|list`: the admin's routes, which the SDK's `RockEnv`
  calls. `make {"env_id"}` creates a sandbox of its own for the env (image: TUMBLER_ROCK_ENV_IMAGE,
  default "debian"; labelled `rock.gem_env`; idle TTL 30 min) and answers its id; `close` closes
  the env and removes that sandbox. Failures are the admin's HTTP 500 `{"detail", "traceback"}`;
  a body that fails validation is its HTTP 200 `{"status": "Failed", "message": "invalid
  parameter", ...}`.

Env ids are ROCK's, i.e. GEM's ("game:GuessTheNumber-v0-easy"), and an id names one env: a GEM
id runs GEM's own env, as "gem:ns:Name" inside the sandbox (the image needs gem-llm: the setup
builds the image `gem`, which the admin routes use by default), so a researcher comparing curves
with GEM gets GEM's observations and rewards. Tumbler's look-alikes (a built-in game with GEM's
parameters, no gem-llm needed) run only when asked for by name: "tumbler:game:GuessTheNumber-v0-easy".
Tumbler's own ids ("Sokoban-v0", "gem:...", "package.module:Class") pass unchanged. The env's
code always runs in the sandbox, never in the server.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from starlette.responses import JSONResponse

from tumbler import wire
from tumbler.agent.envgames import GAMES
from tumbler.errors import CommandTimeout, InvalidRequest, NotFound, TumblerError
from tumbler.server.routes import service
from tumbler.server.routes.rock import _resolve

log = logging.getLogger(__name__)
router = APIRouter(tags=["envs (ROCK-compatible)"])

CONTROL_TIMEOUT_S = 30.0
STEP_TIMEOUT_S = 80.0          # below rocklet's 85 s request timeout and RockEnv's 300 s read timeout
ENV_IMAGE_ENV = "TUMBLER_ROCK_ENV_IMAGE"
GEM_ENV_LABEL = "rock.gem_env"  # marks a sandbox that /apis/v1/envs/gem/make made (and close removes)
GEM_ENV_TTL_S = 1800.0

GEM_IMAGE = "gem"              # the setup's image with gem-llm (`make gem-image`)
LOOKALIKE_PREFIX = "tumbler:"
# Built-in games with GEM's parameters (gem/envs/__init__.py registrations), asked for by name
# with the prefix: not GEM's env (other observations and rewards), but no gem-llm needed.
GEM_EQUIVALENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "game:GuessTheNumber-v0-easy": ("GuessTheNumber-v0", {"low": 1, "high": 10, "max_turns": 4}),
    "game:GuessTheNumber-v0-hard": ("GuessTheNumber-v0", {"low": 1, "high": 50, "max_turns": 7}),
}

NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# -- request models: rocklet's fields (extra fields ignored, as there), plus our optional ones ---

class MakeIn(BaseModel):
    env_id: str
    sandbox_id: NonBlank
    kwargs: dict[str, Any] = Field(default_factory=dict)   # ours: the env's own arguments


class ResetIn(BaseModel):
    sandbox_id: NonBlank
    seed: int | None = None


class StepIn(BaseModel):
    sandbox_id: NonBlank
    action: str
    step_timeout_s: float = Field(STEP_TIMEOUT_S, gt=0, le=3600)   # ours


class CloseIn(BaseModel):
    sandbox_id: NonBlank


class Failure(Exception):
    """A failure with the Python class a ROCK client should see (builtins.<name>)."""

    def __init__(self, cls: type[Exception], message: str):
        super().__init__(message)
        self.cls, self.message = cls, message


# -- the env behind a sandbox_id -----------------------------------------------------------------

def _handles(request: Request) -> dict[str, str]:
    """Tumbler sandbox id -> handle of the env the ROCK routes made there."""
    state = request.app.state
    if not hasattr(state, "rock_env_handles"):
        state.rock_env_handles = {}
    return state.rock_env_handles


def _record(request: Request, sandbox_id: str):
    try:
        return _resolve(service(request), sandbox_id)
    except NotFound:
        raise Failure(KeyError, f"no sandbox {sandbox_id!r}: make an env with a sandbox_id the "
                                "server knows") from None


async def _op(request: Request, sandbox_id: str, op: str, args: dict, timeout: float) -> dict:
    try:
        return (await service(request).call(sandbox_id, op, args, timeout=timeout))[0]
    except TumblerError as exc:
        raise _failure(exc, op) from None


def _failure(exc: TumblerError, op: str) -> Failure:
    """The Python class a ROCK client would see for this failure of `op`."""
    if isinstance(exc, NotFound):       # an unknown env id (make), else an unknown env or sandbox
        return Failure(ValueError if op == "env.make" else KeyError, exc.message)
    if isinstance(exc, InvalidRequest):
        return Failure(ValueError, exc.message)
    if isinstance(exc, CommandTimeout):
        return Failure(TimeoutError, exc.message)
    return Failure(RuntimeError, exc.message)   # conflict (reset first, episode over, busy), internal


async def _handle(request: Request, sandbox_id: str) -> tuple[str, str]:
    """(Tumbler id, handle) of the env keyed by `sandbox_id`; KeyError as rocklet's lookup."""
    record = _record(request, sandbox_id)
    handles = _handles(request)
    handle = handles.get(record.id)
    if handle is None:
        # Not made through these routes since the server started: the sandbox's only open env.
        listed = await _op(request, record.id, "env.list", {}, CONTROL_TIMEOUT_S)
        if len(listed["open"]) != 1:
            raise Failure(KeyError, f"no env for sandbox {sandbox_id!r}: call make first")
        handle = handles[record.id] = listed["open"][0]["handle"]
    return record.id, handle


def translate(env_id: str, kwargs: dict) -> tuple[str, dict]:
    """A ROCK (GEM) env id as the agent's env.make takes it."""
    if env_id.startswith(LOOKALIKE_PREFIX) and env_id[len(LOOKALIKE_PREFIX):] in GEM_EQUIVALENTS:
        ours, defaults = GEM_EQUIVALENTS[env_id[len(LOOKALIKE_PREFIX):]]
        return ours, {**defaults, **kwargs}
    module, colon, _ = env_id.partition(":")
    if not colon or env_id.startswith("gem:") or "." in module:
        return env_id, kwargs
    return "gem:" + env_id, kwargs


async def make(request: Request, sandbox_id: str, env_id: str, kwargs: dict) -> None:
    record = _record(request, sandbox_id)
    ours, args = translate(env_id, kwargs)
    try:
        made = await _op(request, record.id, "env.make", {"env_id": ours, "kwargs": args},
                         CONTROL_TIMEOUT_S)
    except Failure as exc:
        if exc.cls is ValueError:
            hint = ("" if ours == env_id else f" (run as {ours!r})") + (
                f"; GEM ids need gem-llm in the sandbox's image (image {GEM_IMAGE!r}); served "
                f"without it: {', '.join(LOOKALIKE_PREFIX + i for i in sorted(GEM_EQUIVALENTS))} "
                f"and {', '.join(_game_ids())}")
            raise Failure(ValueError, f"env {env_id!r}{hint}: {exc.message}") from None
        raise
    handles = _handles(request)
    old, handles[record.id] = handles.get(record.id), made["handle"]
    if old is not None:     # rocklet replaces the env of a sandbox_id; we close the old one
        try:
            await _op(request, record.id, "env.close", {"handle": old}, CONTROL_TIMEOUT_S)
        except Failure:
            pass


async def reset(request: Request, sandbox_id: str, seed: int | None) -> dict:
    sid, handle = await _handle(request, sandbox_id)
    got = await _op(request, sid, "env.reset", {"handle": handle, "seed": seed}, STEP_TIMEOUT_S)
    return {"observation": got["obs"], "info": got["info"] or {}}


async def step(request: Request, sandbox_id: str, action: str, timeout: float) -> dict:
    sid, handle = await _handle(request, sandbox_id)
    try:
        got = (await service(request).call(sid, "env.step", {"handle": handle, "action": action},
                                           timeout=timeout))[0]
    except CommandTimeout:     # as HostedEnv: the episode ends truncated, the rollout goes on
        why = f"the step took longer than {timeout} s and was abandoned"
        got = {"obs": f"[episode truncated: {why}]", "reward": 0.0, "terminated": False,
               "truncated": True, "info": {"error": why}}
    except TumblerError as exc:
        raise _failure(exc, "env.step") from None
    return {"observation": got["obs"], "reward": float(got["reward"]),
            "terminated": bool(got["terminated"]), "truncated": bool(got["truncated"]),
            "info": got["info"] or {}}


async def close(request: Request, sandbox_id: str) -> str:
    """Close the env keyed by `sandbox_id`; returns the Tumbler sandbox id."""
    sid, handle = await _handle(request, sandbox_id)
    _handles(request).pop(sid, None)
    try:
        await _op(request, sid, "env.close", {"handle": handle}, CONTROL_TIMEOUT_S)
    except Failure as exc:
        if exc.cls is not KeyError:      # already gone in the agent: closed all the same
            raise
    return sid


def _game_ids() -> list[str]:
    return [f"{name}-v0" for name in sorted(GAMES)]


def env_ids() -> list[str]:
    """GEM's ids we know (they need gem-llm in the image), the look-alikes, the built-in games."""
    return (sorted(GEM_EQUIVALENTS) + [LOOKALIKE_PREFIX + i for i in sorted(GEM_EQUIVALENTS)]
            + _game_ids())


# -- /env/...: rocklet's shapes -------------------------------------------------------------------

async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise _Invalid([{"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                         "input": {}, "ctx": {"error": str(exc)}}]) from None


class _Invalid(Exception):
    def __init__(self, errors: list[dict]):
        self.errors = errors


def _parse(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = json.loads(exc.json(include_url=False))
        raise _Invalid([{**e, "loc": ["body", *e["loc"]]} for e in errors]) from None


def _rocklet_failure(exc: Failure) -> JSONResponse:
    return JSONResponse(status_code=511, content={"rockletexception": {
        "message": exc.message, "class_path": f"builtins.{exc.cls.__name__}",
        "traceback": f"{exc.cls.__name__}: {exc.message}\n", "extra_info": {}}})


async def _rocklet(request: Request, model: type[BaseModel] | None, handler) -> JSONResponse:
    try:
        data = await _body(request)
        body = _parse(model, data) if model is not None else None
        return JSONResponse(await handler(body))
    except _Invalid as exc:
        return JSONResponse(status_code=422, content={"detail": exc.errors})
    except Failure as exc:
        return _rocklet_failure(exc)
    except Exception as exc:    # as rocklet: any exception goes back as a transferred exception
        log.exception("ROCK env route failed")
        return _rocklet_failure(Failure(RuntimeError, f"{type(exc).__name__}: {exc}"))


@router.post("/env/make")
async def env_make(request: Request):
    async def run(body: MakeIn):
        await make(request, body.sandbox_id, body.env_id, body.kwargs)
        return {"sandbox_id": body.sandbox_id}
    return await _rocklet(request, MakeIn, run)


@router.post("/env/reset")
async def env_reset(request: Request):
    return await _rocklet(request, ResetIn, lambda b: reset(request, b.sandbox_id, b.seed))


@router.post("/env/step")
async def env_step(request: Request):
    return await _rocklet(request, StepIn,
                          lambda b: step(request, b.sandbox_id, b.action, b.step_timeout_s))


@router.post("/env/close")
async def env_close(request: Request):
    async def run(body: CloseIn):
        await close(request, body.sandbox_id)
        return {"sandbox_id": body.sandbox_id}
    return await _rocklet(request, CloseIn, run)


@router.post("/env/list")
async def env_list(request: Request):
    async def run(_body):
        return {"env_id": env_ids()}
    return await _rocklet(request, None, run)


# -- /apis/v1/envs/gem/...: the admin's shapes, what RockEnv calls ----------------------------------

def _admin_failure(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": message, "traceback": []})


async def _admin(request: Request, model: type[BaseModel] | None, handler) -> JSONResponse:
    try:
        data = await _body(request)
        if model is None and not isinstance(data, dict):
            raise _Invalid([{"type": "dict_type", "loc": ["body"],
                             "msg": "Input should be a valid dictionary"}])
        body = _parse(model, data) if model is not None else data
        return JSONResponse(await handler(body))
    except _Invalid as exc:
        error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors)
        return JSONResponse({"status": "Failed", "message": "invalid parameter", "error": error,
                             "result": None})
    except Failure as exc:
        return _admin_failure(500, exc.message)
    except Exception as exc:
        log.exception("ROCK gem route failed")
        return _admin_failure(500, f"{type(exc).__name__}: {exc}")


def _env_image(request: Request | None = None) -> str:
    """The image of a sandbox made for an env: the operator's choice, else `gem` where the
    setup built it (GEM ids need gem-llm), else the default image."""
    chosen = os.environ.get(ENV_IMAGE_ENV)
    if chosen:
        return chosen
    images = getattr(service(request).runtime, "images", None) if request is not None else None
    if images is not None and images.exists(GEM_IMAGE):
        return GEM_IMAGE
    return wire.CreateSandboxRequest.model_fields["image"].default


@router.post("/apis/v1/envs/gem/make")
async def gem_make(request: Request):
    async def run(body: dict):
        env_id = body.get("env_id")
        if not env_id or not isinstance(env_id, str):
            raise Failure(ValueError, "env_id is required")
        kwargs = body.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise Failure(ValueError, "kwargs must be an object")
        svc = service(request)
        try:
            record = await svc.create(wire.CreateSandboxRequest(
                image=_env_image(request), labels={GEM_ENV_LABEL: env_id[:200]}, ttl_s=GEM_ENV_TTL_S))
        except TumblerError as exc:
            raise Failure(RuntimeError, f"could not create a sandbox for env {env_id!r} on image "
                                        f"{_env_image(request)!r} ({ENV_IMAGE_ENV}): {exc.message}") from None
        try:
            await make(request, record.id, env_id, kwargs)
        except BaseException:
            await svc._remove_quietly(record.id)
            raise
        log.info("ROCK env %s made in its own sandbox %s", env_id, record.id)
        return {"sandbox_id": record.id}
    return await _admin(request, None, run)


@router.post("/apis/v1/envs/gem/reset")
async def gem_reset(request: Request):
    return await _admin(request, ResetIn, lambda b: reset(request, b.sandbox_id, b.seed))


@router.post("/apis/v1/envs/gem/step")
async def gem_step(request: Request):
    return await _admin(request, StepIn,
                        lambda b: step(request, b.sandbox_id, b.action, b.step_timeout_s))


@router.post("/apis/v1/envs/gem/close")
async def gem_close(request: Request):
    async def run(body: CloseIn):
        record = _record(request, body.sandbox_id)
        try:
            await close(request, body.sandbox_id)
        finally:
            if GEM_ENV_LABEL in record.labels:   # the sandbox make created for this env
                try:
                    await service(request).remove(record.id)
                except NotFound:
                    pass
        return {"sandbox_id": body.sandbox_id}
    return await _admin(request, CloseIn, run)


@router.post("/apis/v1/envs/gem/list")
async def gem_list(request: Request):
    async def run(body: dict):
        sandbox_id = body.get("sandbox_id")
        if not sandbox_id:
            raise Failure(ValueError, "sandbox_id is required")
        _record(request, str(sandbox_id))
        return {"env_id": env_ids()}
    return await _admin(request, None, run)
