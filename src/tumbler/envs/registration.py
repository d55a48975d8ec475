"""Envs by id: `register(id, entry_point="module:Class", **defaults)` and `make(id, **kwargs)`.

Modules are imported only when an env is made. Ids starting with "gem:" make GEM's envs
("gem:game:GuessTheNumber-v0-easy"). Other packages add envs through the entry-point group
`tumbler.envs` (name = env id, value = "module:Class"), found on the first unknown id.
"""
from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

from tumbler.envs.gemenvs import make_gem
from tumbler.envs.wrappers import EpisodeGuard
from tumbler.errors import AlreadyExists, InvalidRequest, NotFound

log = logging.getLogger("tumbler.envs")

ENTRY_POINT_GROUP = "tumbler.envs"
GEM_PREFIX = "gem:"


@dataclass
class EnvSpec:
    """How to make one env: what to call and the keyword arguments it gets by default."""

    id: str
    entry_point: str | Callable[..., Any]
    kwargs: dict = field(default_factory=dict)


_registry: dict[str, EnvSpec] = {}
_plugins_loaded = False


def register(env_id: str, entry_point: str | Callable[..., Any], *, replace: bool = False,
             **kwargs) -> EnvSpec:
    """Add an env; `entry_point` is "module:Class" (imported on first make) or a callable."""
    if not env_id or env_id.startswith(GEM_PREFIX):
        raise InvalidRequest(f"env id {env_id!r} is empty or uses the reserved prefix {GEM_PREFIX!r}")
    if isinstance(entry_point, str) and entry_point.count(":") != 1:
        raise InvalidRequest(f"entry point {entry_point!r} must look like 'package.module:Class'")
    if env_id in _registry and not replace:
        raise AlreadyExists(f"env {env_id!r} is already registered (pass replace=True to replace it)")
    spec = _registry[env_id] = EnvSpec(env_id, entry_point, dict(kwargs))
    return spec


def registered() -> list[str]:
    """Ids of the registered envs (GEM's are not listed: make them with the "gem:" prefix)."""
    _load_plugins()
    return sorted(_registry)


def spec(env_id: str) -> EnvSpec:
    """The spec of a registered env; NotFound, naming close ids, for an unknown one."""
    if env_id not in _registry:
        _load_plugins()
    if env_id not in _registry:
        close = difflib.get_close_matches(env_id, list(_registry), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(registered())}"
        raise NotFound(f"no env with id {env_id!r}{hint}")
    return _registry[env_id]


def make(env_id: str, **kwargs):
    """A new env by id, its defaults overridden by kwargs, guarded by `EpisodeGuard`.

    Raises NotFound for an unknown id (or an entry point that cannot be imported) and
    InvalidRequest for keyword arguments the env rejects."""
    if env_id.startswith(GEM_PREFIX):
        return make_gem(env_id[len(GEM_PREFIX):], **kwargs)
    found = spec(env_id)
    factory = _load(found)
    try:
        env = factory(**{**found.kwargs, **kwargs})
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"bad arguments for env {env_id!r}: {exc}") from None
    env.env_id = env_id
    return EpisodeGuard(env)


def _load(found: EnvSpec) -> Callable[..., Any]:
    if callable(found.entry_point):
        return found.entry_point
    module_name, attr = found.entry_point.split(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NotFound(f"env {found.id!r}: cannot import {found.entry_point}: {exc}") from None


def _load_plugins() -> None:
    """Register the envs other installed packages declare (once per process)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _registry:
            register(ep.name, ep.value)
            log.debug("registered env %s from entry point %s", ep.name, ep.value)


def _register_builtins() -> None:
    for name in ("Sokoban", "FrozenLake", "GuessTheNumber", "Countdown", "Math", "Code"):
        register(f"{name}-v0", f"tumbler.agent.envgames:{name}")
    register("ToolUse-v0", "tumbler.envs.tooluse:ToolUseEnv")
    register("Terminal-v0", "tumbler.envs.terminal:TerminalEnv")
    register("Tasks-v0", "tumbler.envs.taskset:TaskSetEnv")


_register_builtins()
