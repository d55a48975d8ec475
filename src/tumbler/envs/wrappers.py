"""Behaviour added around any env: call-order checks, step limits, chat formatting, action parsing.

    env = ActionParser(TimeLimit(make("Sokoban-v0"), max_steps=40), format_penalty=-0.1)
    env = ChatFormat(env, system_prompt="You are playing a game.")
"""
from __future__ import annotations

import enum
import re

from tumbler.envs.core import Step, Wrapper
from tumbler.errors import Conflict, TumblerError

BOXED = r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"


class EnvCrashed(TumblerError):
    """The env's own code raised while resetting or stepping; the episode is over."""


class Phase(enum.Enum):
    NEEDS_RESET = "needs_reset"
    RUNNING = "running"
    DONE = "done"


class EpisodeGuard(Wrapper):
    """Enforces reset -> step ... -> done -> reset, and turns an env's own exceptions into
    `EnvCrashed` naming the env and the call. `make()` puts it around every env."""

    def __init__(self, env):
        super().__init__(env)
        self.phase = Phase.NEEDS_RESET

    def reset(self, seed: int | None = None):
        self.phase = Phase.NEEDS_RESET
        result = self._call("reset", self.env.reset, seed=seed)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise EnvCrashed(f"{self._name()}.reset returned {type(result).__name__}, not (obs, info)")
        self.phase = Phase.RUNNING
        return result

    def step(self, action) -> Step:
        if self.phase is Phase.NEEDS_RESET:
            raise Conflict(f"{self._name()}: call reset() before step()")
        if self.phase is Phase.DONE:
            raise Conflict(f"{self._name()}: the episode is over (terminated or truncated); "
                           "call reset() to start another")
        result = self._call("step", self.env.step, action)
        if not (isinstance(result, tuple) and len(result) == 5):
            self.phase = Phase.NEEDS_RESET
            raise EnvCrashed(f"{self._name()}.step returned {type(result).__name__}, not a 5-tuple")
        if result[2] or result[3]:
            self.phase = Phase.DONE
        return result

    def sample_random_action(self):
        return self._call("sample_random_action", self.env.sample_random_action, ends_episode=False)

    def spawn(self, same_state: bool = False, **kwargs):
        return type(self)(self._call("spawn", self.env.spawn, same_state=same_state,
                                     ends_episode=False, **kwargs))

    def _call(self, what: str, fn, *args, ends_episode: bool = True, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TumblerError:
            raise
        except Exception as exc:
            if ends_episode:
                self.phase = Phase.NEEDS_RESET
            detail = f": {exc}" if str(exc) else " (no message)"
            raise EnvCrashed(f"{self._name()}.{what} raised {type(exc).__name__}{detail}") from exc

    def _name(self) -> str:
        return self.unwrapped.env_id or type(self.unwrapped).__name__


class TimeLimit(Wrapper):
    """Truncates an episode after `max_steps` steps (info["time_limit"] = True)."""

    def __init__(self, env, max_steps: int):
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        super().__init__(env)
        self.max_steps = max_steps
        self.steps = 0

    def wrapper_kwargs(self) -> dict:
        return {"max_steps": self.max_steps}

    def reset(self, seed: int | None = None):
        self.steps = 0
        return self.env.reset(seed=seed)

    def step(self, action) -> Step:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        if self.steps >= self.max_steps and not terminated:
            truncated = True
            info["time_limit"] = True
        return obs, reward, terminated, truncated, info


class ActionParser(Wrapper):
    """Reads the action out of a model's reply: the last `\\boxed{...}` by default, or the last
    match of `pattern` (its first group when it has one). A reply with no match is not passed on:
    it earns `format_penalty`, the observation says what was expected, info["format_error"] is
    True, and the episode ends when `terminate_on_error`."""

    def __init__(self, env, pattern: str = BOXED, format_penalty: float = -0.1,
                 terminate_on_error: bool = False):
        super().__init__(env)
        try:
            self.regex = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise ValueError(f"bad action pattern {pattern!r}: {exc}") from None
        self.pattern, self.format_penalty = pattern, float(format_penalty)
        self.terminate_on_error = terminate_on_error

    def wrapper_kwargs(self) -> dict:
        return {"pattern": self.pattern, "format_penalty": self.format_penalty,
                "terminate_on_error": self.terminate_on_error}

    def parse(self, reply: str) -> str | None:
        """The action in `reply`, or None when it has none."""
        matches = list(self.regex.finditer(str(reply)))
        if not matches:
            return None
        last = matches[-1]
        return (last.group(1) if self.regex.groups else last.group(0)).strip()

    def step(self, action) -> Step:
        parsed = self.parse(action)
        if parsed is None:
            expected = "\\boxed{...}" if self.pattern == BOXED else f"a match of /{self.pattern}/"
            obs = f"Your reply had no action in the expected format: put it in {expected}."
            return obs, self.format_penalty, self.terminate_on_error, False, {"format_error": True}
        obs, reward, terminated, truncated, info = self.env.step(parsed)
        info.setdefault("parsed_action", parsed)
        return obs, reward, terminated, truncated, info


class ChatFormat(Wrapper):
    """Turns observations into a chat: a list of {"role", "content"} messages (system prompt,
    then user observations and assistant actions in turn), or the text of that chat rendered by
    `tokenizer.apply_chat_template` when a tokenizer is given. `max_turns` keeps the last turns."""

    def __init__(self, env, system_prompt: str | None = None, tokenizer=None,
                 max_turns: int | None = None):
        super().__init__(env)
        self.system_prompt, self.tokenizer, self.max_turns = system_prompt, tokenizer, max_turns
        self.messages: list[dict] = []

    def wrapper_kwargs(self) -> dict:
        return {"system_prompt": self.system_prompt, "tokenizer": self.tokenizer,
                "max_turns": self.max_turns}

    def reset(self, seed: int | None = None):
        obs, info = self.env.reset(seed=seed)
        self.messages = [{"role": "user", "content": str(obs)}]
        return self._render(), info

    def step(self, action) -> Step:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.messages += [{"role": "assistant", "content": str(action)},
                          {"role": "user", "content": str(obs)}]
        return self._render(), reward, terminated, truncated, info

    def _render(self):
        messages = self.messages
        if self.max_turns is not None:
            messages = messages[-(2 * self.max_turns + 1):]
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}] + messages
        if self.tokenizer is None:
            return [dict(m) for m in messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
