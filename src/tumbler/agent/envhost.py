"""Envs hosted inside the sandbox, so that env code runs isolated next to what its actions touch.

Ops (errors carry the usual kinds: invalid, not_found, conflict, internal):

  env.make   {env_id, kwargs = {}} -> {handle, env_id}
             env_id: a built-in game ("Sokoban-v0"), "gem:<GEM id>" when the image has gem-llm,
             or "package.module:Class" importable by the image's python3
  env.reset  {handle, seed: int | null} -> {obs, info}
  env.step   {handle, action: str} -> {obs, reward, terminated, truncated, info}
  env.sample {handle, kind: "random" | "reference" = "random"} -> {action}
             the env's random action (its own generator), or a built-in game's solver move
  env.close  {handle} -> {}
  env.list   {} -> {games: [id], open: [{handle, env_id, phase}]}

The host enforces a timeout per step; a step still running refuses further calls on its handle
("conflict") until it returns, while env.close always answers at once. There is one EnvHost per
agent process (the agent serves one sandbox), made and held by the agent (`server.Agent`).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import threading

from . import args as a
from .envgames import GAMES, make_game
from .protocol import CONFLICT, INTERNAL, INVALID, NOT_FOUND, AgentRequestError

MAX_OPEN = 1024            # envs one sandbox may hold open at once


class _Hosted:
    """One env and where its episode stands: "new" (needs reset), "running" or "done"."""

    def __init__(self, env_id: str, env):
        self.env_id, self.env = env_id, env
        self.phase = "new"
        self.lock = threading.Lock()


class EnvHost:
    """The open envs of this agent, by handle. The agent makes one at its first env op and
    holds it (`agent.server.Agent`): no state lives in this module."""

    def __init__(self):
        self._envs: dict[str, _Hosted] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._site_added = False

    def make(self, req, body):
        env_id = a.get(req, "env_id", str)
        kwargs = a.get(req, "kwargs", dict, {}) or {}
        with self._lock:
            if len(self._envs) >= MAX_OPEN:
                raise AgentRequestError(CONFLICT, f"{MAX_OPEN} envs are open here; close some first")
        env = _construct(env_id, kwargs, self._use_site_packages)
        with self._lock:
            self._next += 1
            handle = f"env-{self._next}"
            self._envs[handle] = _Hosted(env_id, env)
        return {"handle": handle, "env_id": env_id}, b""

    def reset(self, req, body):
        hosted = self._get(req)
        seed = a.get(req, "seed", int, None)
        with _busy(hosted):
            hosted.phase = "new"
            obs, info = _run(hosted, "reset", hosted.env.reset, seed=seed)
            hosted.phase = "running"
        return {"obs": _plain(obs), "info": _plain(info)}, b""

    def step(self, req, body):
        hosted = self._get(req)
        action = a.get(req, "action", str)
        with _busy(hosted):
            if hosted.phase != "running":
                raise AgentRequestError(CONFLICT, f"{hosted.env_id}: " + (
                    "call env.reset before env.step" if hosted.phase == "new"
                    else "the episode is over; call env.reset to start another"))
            obs, reward, terminated, truncated, info = _run(hosted, "step", hosted.env.step, action)
            if terminated or truncated:
                hosted.phase = "done"
        return {"obs": _plain(obs), "reward": float(reward), "terminated": bool(terminated),
                "truncated": bool(truncated), "info": _plain(info)}, b""

    def sample(self, req, body):
        hosted = self._get(req)
        kind = a.get(req, "kind", str, "random")
        method = {"random": "sample_random_action", "reference": "reference_action"}.get(kind)
        if method is None or not hasattr(hosted.env, method):
            raise AgentRequestError(INVALID, f"{hosted.env_id} has no {kind!r} action")
        with _busy(hosted):
            action = _run(hosted, method, getattr(hosted.env, method))
        return {"action": str(action)}, b""

    def close(self, req, body):
        handle = a.get(req, "handle", str)
        with self._lock:
            hosted = self._envs.pop(handle, None)
        if hosted is None:
            raise AgentRequestError(NOT_FOUND, f"no open env {handle!r}")
        # Not under the env's lock: closing must answer even while a step hangs.
        try:
            hosted.env.close()
        except Exception:
            pass
        return {}, b""

    def list(self, req, body):
        with self._lock:
            open_envs = [{"handle": h, "env_id": e.env_id, "phase": e.phase}
                         for h, e in self._envs.items()]
        return {"games": [f"{name}-v0" for name in sorted(GAMES)], "open": open_envs}, b""

    def _get(self, req) -> _Hosted:
        handle = a.get(req, "handle", str)
        with self._lock:
            hosted = self._envs.get(handle)
        if hosted is None:
            raise AgentRequestError(NOT_FOUND, f"no open env {handle!r}; make one with env.make")
        return hosted

    def _use_site_packages(self) -> None:
        """Put the image's site-packages on sys.path (once), for envs from installed packages.

        The agent runs its own interpreter (`python3 -I -S` from the read-only /.tumbler
        mount): no site-packages, so nothing installed in the image runs in it unasked. An env
        that comes from an installed package (gem:..., package.module:Class) needs the image's,
        so they are added, with their .pth files, on its first make: the image's own
        directories for this Python version (Debian's dist-packages and the usual
        site-packages), not the interpreter's."""
        with self._lock:
            if self._site_added:
                return
            import site
            version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
            for d in (f"/usr/local/lib/{version}/dist-packages", "/usr/lib/python3/dist-packages",
                      f"/usr/lib/{version}/dist-packages", f"/usr/local/lib/{version}/site-packages",
                      f"/usr/lib/{version}/site-packages"):
                if os.path.isdir(d) and d not in sys.path:
                    site.addsitedir(d)
            self._site_added = True


class _busy:
    """Holds an env's lock without waiting: a second call while one runs is refused."""

    def __init__(self, hosted: _Hosted):
        self.hosted = hosted

    def __enter__(self):
        if not self.hosted.lock.acquire(blocking=False):
            raise AgentRequestError(CONFLICT, f"{self.hosted.env_id} is still busy with an earlier "
                                    "call (a step that timed out?); close it or wait")

    def __exit__(self, *exc):
        self.hosted.lock.release()


def _construct(env_id: str, kwargs: dict, use_site_packages):
    """A new env: a built-in game, a GEM env, or an importable class (`use_site_packages()`
    first, for the last two)."""
    try:
        if env_id.startswith("gem:"):
            return _gem_make(env_id[4:], kwargs, use_site_packages)
        if ":" in env_id:
            module, _, attr = env_id.partition(":")
            use_site_packages()
            return getattr(importlib.import_module(module), attr)(**kwargs)
        return make_game(env_id, **kwargs)
    except AgentRequestError:
        raise
    except (ImportError, AttributeError) as e:
        raise AgentRequestError(NOT_FOUND, f"cannot load env {env_id!r} here: {e}") from None
    except (TypeError, ValueError) as e:
        raise AgentRequestError(INVALID, f"bad env id or arguments for {env_id!r}: {e}") from None


def _gem_make(gem_id: str, kwargs: dict, use_site_packages):
    use_site_packages()
    try:
        import gem
    except ImportError as e:
        raise AgentRequestError(INVALID, "gem-llm is not installed in this sandbox's image "
                                f"({e}); make one with `tumbler image add-pip gem gem-llm==0.1.0` "
                                "and start the sandbox from image 'gem'") from None
    from gem.envs.registration import ENV_REGISTRY
    if gem_id not in ENV_REGISTRY:
        import difflib
        close = difflib.get_close_matches(gem_id, list(ENV_REGISTRY), n=3)
        raise AgentRequestError(NOT_FOUND, f"GEM has no env {gem_id!r}"
                                + (f"; did you mean {', '.join(close)}?" if close else ""))
    return gem.make(gem_id, **kwargs)


def _run(hosted: _Hosted, what: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except AgentRequestError:
        raise
    except Exception as e:
        hosted.phase = "new"
        raise AgentRequestError(INTERNAL, f"{hosted.env_id}.{what} raised {type(e).__name__}: {e}") from None


def _plain(value):
    """`value` as JSON can carry it (anything else becomes its str)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))
