"""N envs stepped together. Env i is seeded with seed + i; an env whose episode ends is reset in
the same step (its last observation goes to info["final_obs"]) unless autoreset is off.

    vec = AsyncVectorEnv([make("Sokoban-v0") for _ in range(8)])
    obs, infos = vec.reset(seed=0)
    obs, rewards, terminated, truncated, infos = vec.step(actions)

`SyncVectorEnv` steps them one after another in the caller's thread; `AsyncVectorEnv` steps them
concurrently in a thread pool, which is what envs that wait on sandboxes need.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from tumbler.errors import InvalidRequest, TumblerError


class SyncVectorEnv:
    """N envs (or factories of envs) behind one reset/step, stepped in order."""

    def __init__(self, envs: Sequence[Any | Callable[[], Any]], autoreset: bool = True):
        if not envs:
            raise InvalidRequest("a vector env needs at least one env")
        self.envs = [e() if callable(e) and not hasattr(e, "step") else e for e in envs]
        self.num_envs = len(self.envs)
        self.autoreset = autoreset

    def reset(self, seed: int | Sequence[int] | None = None) -> tuple[list, list[dict]]:
        """Reset every env; env i gets seed + i (or seed[i] from a list). Returns (obs, infos)."""
        seeds = self._seeds(seed)
        results = self._map(lambda i: self.envs[i].reset(seed=seeds[i]))
        return [r[0] for r in results], [r[1] for r in results]

    def step(self, actions: Sequence[Any]) -> tuple[list, list[float], list[bool], list[bool], list[dict]]:
        """One action per env. Returns lists (obs, rewards, terminated, truncated, infos)."""
        if len(actions) != self.num_envs:
            raise InvalidRequest(f"got {len(actions)} actions for {self.num_envs} envs")
        results = self._map(lambda i: self._step_one(i, actions[i]))
        return tuple([list(col) for col in zip(*results)])  # type: ignore[return-value]

    def sample_random_action(self) -> list:
        return [env.sample_random_action() for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _step_one(self, i: int, action):
        obs, reward, terminated, truncated, info = self.envs[i].step(action)
        if self.autoreset and (terminated or truncated):
            info = dict(info, final_obs=obs)
            obs, reset_info = self.envs[i].reset()
            info["reset_info"] = reset_info
        return obs, float(reward), bool(terminated), bool(truncated), info

    def _seeds(self, seed) -> list:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int):
            return [seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise InvalidRequest(f"got {len(seed)} seeds for {self.num_envs} envs")
        return list(seed)

    def _map(self, fn) -> list:
        return [_labelled(fn, i) for i in range(self.num_envs)]


class AsyncVectorEnv(SyncVectorEnv):
    """Like SyncVectorEnv, but the envs' resets and steps run at once in a pool of threads
    (`workers`, default one per env), so N sandboxes wait in parallel."""

    def __init__(self, envs: Sequence[Any | Callable[[], Any]], autoreset: bool = True,
                 workers: int | None = None):
        super().__init__(envs, autoreset)
        self.pool = ThreadPoolExecutor(max_workers=workers or self.num_envs,
                                       thread_name_prefix="vector-env")

    def _map(self, fn) -> list:
        futures = [self.pool.submit(_labelled, fn, i) for i in range(self.num_envs)]
        # Each env bounds its own step (hosted envs have step timeouts), so this wait ends.
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        super().close()


def _labelled(fn, i: int):
    """Run fn(i); an error says which env raised it, keeping its type."""
    try:
        return fn(i)
    except TumblerError as exc:
        exc.args = (f"env {i}: {exc.message}",)
        exc.message = exc.args[0]
        raise
