"""Envs that run inside a sandbox, driven from the host through the agent's env ops.

    with LocalSandbox() as sb:
        env = HostedEnv(sb, "Sokoban-v0", size=7)
        obs, info = env.reset(seed=1)
        obs, reward, terminated, truncated, info = env.step("\\boxed{up}")

    with HostedVectorEnv("Sokoban-v0", n=64) as vec:      # 64 sandboxes, stepped concurrently
        obs, infos = vec.reset(seed=0)

The env's code and everything its actions do stay in the sandbox. Faults end the episode
instead of hanging it: a step that runs past `step_timeout` seconds, or a sandbox that dies,
comes back as a truncated step whose observation says what happened (info["error"]).
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from tumbler import ops
from tumbler.envs.core import Env, Step
from tumbler.envs.vector import AsyncVectorEnv
from tumbler.errors import CommandTimeout, Conflict, InvalidRequest, SandboxError
from tumbler.handle import do

log = logging.getLogger("tumbler.envs.hosted")

DEFAULT_STEP_TIMEOUT = 30.0    # seconds one env.reset or env.step may take


class HostedEnv(Env):
    """One env inside `sandbox`: any sandbox handle (`tumbler.handle`): a LocalSandbox, a
    server's `tumbler.Sandbox`, a cluster sandbox (`ClusterClient.sandbox(id)`).

    Args:
        env_id: what the agent hosts: "Sokoban-v0", "gem:game:GuessTheNumber-v0-easy" (image
            with gem-llm), or "package.module:Class" importable in the image.
        step_timeout: seconds a reset or step may take before the episode is truncated.
        kwargs: the env's own arguments.
    """

    def __init__(self, sandbox, env_id: str, *, step_timeout: float = DEFAULT_STEP_TIMEOUT,
                 **kwargs):
        self.sandbox, self.env_id, self.kwargs = sandbox, env_id, kwargs
        self.step_timeout = step_timeout
        self.handle: str | None = None
        self._stuck = False      # a step timed out: the handle may still be busy in the sandbox
        self._dead: str | None = None
        self.handle = do(sandbox, ops.env_make(env_id, kwargs))

    def reset(self, seed: int | None = None):
        if self._dead:
            raise SandboxError(f"{self.env_id}: cannot reset, {self._dead}")
        if self._stuck:
            self._replace_handle()
        return do(self.sandbox, ops.env_reset(self.handle, seed, self.step_timeout))

    def step(self, action) -> Step:
        if self._dead:
            raise Conflict(f"{self.env_id}: the episode ended when {self._dead}; nothing to step")
        try:
            return do(self.sandbox, ops.env_step(self.handle, str(action), self.step_timeout))
        except CommandTimeout:
            self._stuck = True
            return self._cut(f"the step took longer than {self.step_timeout} s and was abandoned")
        except SandboxError as exc:
            self._dead = f"the sandbox failed ({exc.message})"
            return self._cut(self._dead)

    def sample_random_action(self) -> str:
        return do(self.sandbox, ops.env_sample(self.handle, "random", self.step_timeout))

    def reference_action(self) -> str:
        """A built-in game's solver move from the current state."""
        return do(self.sandbox, ops.env_sample(self.handle, "reference", self.step_timeout))

    def spawn(self, same_state: bool = False, **kwargs) -> "HostedEnv":
        if same_state:
            raise NotImplementedError("a hosted env cannot spawn with the same state")
        return HostedEnv(self.sandbox, self.env_id, step_timeout=self.step_timeout,
                         **{**self.kwargs, **kwargs})

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is None or self._dead:
            return
        try:
            do(self.sandbox, ops.env_close(handle))
        except SandboxError as exc:   # the sandbox went first; nothing left to close
            log.info("env %s in a gone sandbox: %s", handle, exc)

    def _cut(self, why: str) -> Step:
        return f"[episode truncated: {why}]", 0.0, False, True, {"error": why}

    def _replace_handle(self) -> None:
        """A new env in place of one whose step hung (the old one is closed, not waited for)."""
        old = self.handle
        self.handle = do(self.sandbox, ops.env_make(self.env_id, self.kwargs))
        self._stuck = False
        do(self.sandbox, ops.env_close(old))


class HostedVectorEnv(AsyncVectorEnv):
    """`n` hosted envs, each in a sandbox of its own made here (and removed on close), or in
    the sandboxes given (any handles: local, server, cluster; left to their owner on close).

    Args:
        env_id, kwargs: the env each sandbox hosts.
        n: how many sandboxes (and envs); with `sandboxes`, None or their number.
        image: the sandboxes' image. sandbox_options: more LocalSandbox arguments (runtime=...).
        sandboxes: host in these instead of making LocalSandboxes.
        step_timeout: seconds per step and env, as for HostedEnv.
    """

    def __init__(self, env_id: str, n: int | None = None, *, image: str = "debian",
                 step_timeout: float = DEFAULT_STEP_TIMEOUT, autoreset: bool = True,
                 sandbox_options: dict | None = None, sandboxes: list | None = None, **kwargs):
        from tumbler.local import LocalSandbox
        self._owned = sandboxes is None
        if sandboxes is not None:
            if n is not None and n != len(sandboxes):
                raise InvalidRequest(f"n={n} but {len(sandboxes)} sandboxes were given")
            self.sandboxes = list(sandboxes)
            super().__init__([HostedEnv(sb, env_id, step_timeout=step_timeout, **kwargs)
                              for sb in self.sandboxes], autoreset=autoreset)
            return
        if n is None:
            raise InvalidRequest("give n (how many sandboxes to make) or sandboxes")
        self.sandboxes: list = []
        options = {"image": image, **(sandbox_options or {})}
        with ThreadPoolExecutor(max_workers=min(n, 16)) as pool:
            futures = [pool.submit(LocalSandbox, **options) for _ in range(n)]
            for f in futures:
                try:
                    self.sandboxes.append(f.result(timeout=120))
                except Exception:
                    self._remove_sandboxes(futures)
                    raise
        try:
            envs = [HostedEnv(sb, env_id, step_timeout=step_timeout, **kwargs) for sb in self.sandboxes]
        except Exception:
            self._remove_sandboxes()
            raise
        super().__init__(envs, autoreset=autoreset)

    def close(self) -> None:
        super().close()
        self._remove_sandboxes()

    def _remove_sandboxes(self, futures=()) -> None:
        if not self._owned:
            self.sandboxes = []
            return
        made = {id(sb): sb for sb in self.sandboxes}
        for f in futures:
            if f.done() and f.exception() is None:
                made.setdefault(id(f.result()), f.result())
        for sb in made.values():
            try:
                sb.remove()
            except Exception as exc:  # keep removing the others
                log.warning("removing sandbox %s failed: %s", sb.id, exc)
        self.sandboxes = []
