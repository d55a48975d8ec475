"""The environment contract, GEM's signatures:

    obs, info = env.reset(seed=None)
    obs, reward, terminated, truncated, info = env.step(action)

`terminated` means the task ended (solved or failed); `truncated` means it was cut off (a step
limit, a timeout, a dead sandbox). After either, call `reset()` again. Observations and actions
are text for every built-in env. Envs seed a `random.Random` of their own, never the global one.
"""
from __future__ import annotations

import abc
from typing import Any

Step = tuple[Any, float, bool, bool, dict]


class Env(abc.ABC):
    """Base of Tumbler's environments. `make()` guards every env it returns (see `EpisodeGuard`),
    so subclasses need not check call order themselves."""

    #: the registry id this env was made from (set by `make`)
    env_id: str | None = None

    @abc.abstractmethod
    def reset(self, seed: int | None = None) -> tuple[Any, dict]:
        """Start an episode; the same seed gives the same instance. Returns (obs, info)."""

    @abc.abstractmethod
    def step(self, action: Any) -> Step:
        """Apply one action. Returns (obs, reward, terminated, truncated, info)."""

    def sample_random_action(self) -> Any:
        """An action drawn at random from the env's own generator (the random baseline)."""
        raise NotImplementedError(f"{type(self).__name__} has no random action")

    def spawn(self, same_state: bool = False, **kwargs) -> "Env":
        """A new env with the same configuration (kwargs override it)."""
        raise NotImplementedError(f"{type(self).__name__} cannot spawn")

    def close(self) -> None:
        """Release what the env holds (sandboxes, files). Safe to call twice."""

    @property
    def unwrapped(self) -> "Env":
        return self

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Wrapper(Env):
    """An env around another: overrides what it changes, forwards the rest (attributes included)."""

    def __init__(self, env):
        self.env = env

    def reset(self, seed: int | None = None):
        return self.env.reset(seed=seed)

    def step(self, action) -> Step:
        return self.env.step(action)

    def sample_random_action(self):
        return self.env.sample_random_action()

    def spawn(self, same_state: bool = False, **kwargs):
        return type(self)(self.env.spawn(same_state=same_state, **kwargs), **self.wrapper_kwargs())

    def wrapper_kwargs(self) -> dict:
        """The arguments this wrapper was made with, for `spawn`."""
        return {}

    def close(self) -> None:
        self.env.close()

    @property
    def unwrapped(self):
        return self.env.unwrapped

    def __getattr__(self, name: str):
        # Only reached for attributes the wrapper lacks: the wrapped env's (GEM wrappers do the same).
        if name.startswith("_") or name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"


def _games_are_envs() -> None:
    # The built-in games are standard-library classes (they also run inside sandboxes); they
    # honour this contract, so they count as Envs for isinstance checks.
    from tumbler.envs.games import GameEnv
    Env.register(GameEnv)


_games_are_envs()
