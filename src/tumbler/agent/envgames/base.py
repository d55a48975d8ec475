"""The base of the built-in games: GEM's Env signatures, standard library only.

A game is a text environment: `reset(seed)` returns the puzzle as a prompt, `step(action)` reads
the move from the last `\\boxed{...}` in the action (or the whole action when there is none) and
answers with feedback. Each game owns a `random.Random`; nothing touches the global one.

Every game also has `reference_action()`, the move a solver would make now (used by tests and as
an upper baseline), and `sample_random_action()` (the lower baseline).
"""
from __future__ import annotations

import random
import re

BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def extract_move(action) -> str:
    """The move in an action: the content of its last \\boxed{...}, else the stripped text."""
    text = str(action)
    found = BOXED.findall(text)
    return (found[-1] if found else text).strip()


class GameEnv:
    """One text game. Subclasses implement `_new_episode`, `_move`, `_random_move`, `_solver_move`.

    Args:
        max_turns: moves allowed per episode; the episode is truncated after the last one.
        seed: seeds the first `reset()` when it is given no seed of its own.
    """

    #: the game's name inside the sandbox host and in the registry (without the version)
    name = "Game"

    def __init__(self, max_turns: int = 50, seed: int | None = None):
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        self.max_turns = max_turns
        self._seed = seed
        self.rng = random.Random(seed)
        self.turn = 0

    # -- GEM's interface ---------------------------------------------------------------------

    def reset(self, seed: int | None = None):
        """Start an episode; the same seed gives the same puzzle. Returns (prompt, info)."""
        if seed is None:
            seed, self._seed = self._seed, None
        self.rng = random.Random(seed) if seed is not None else random.Random(self.rng.random())
        self.turn = 0
        prompt = self._new_episode()
        return prompt, {"max_turns": self.max_turns}

    def step(self, action):
        """Play one move. Returns (feedback, reward, terminated, truncated, info)."""
        self.turn += 1
        move = extract_move(action)
        feedback, reward, terminated, info = self._move(move)
        info["turn"] = self.turn
        info["parsed_action"] = move
        truncated = not terminated and self.turn >= self.max_turns
        if truncated:
            feedback += f"\nNo moves left ({self.max_turns} used)."
        return feedback, reward, terminated, truncated, info

    def sample_random_action(self) -> str:
        return "\\boxed{" + self._random_move() + "}"

    def reference_action(self) -> str:
        """The move a solver makes from the current state (boxed)."""
        return "\\boxed{" + self._solver_move() + "}"

    def spawn(self, same_state: bool = False, **kwargs):
        """A new env with this one's configuration (overridden by kwargs); never shares state."""
        if same_state:
            raise NotImplementedError(f"{self.name} cannot spawn with the same state")
        return type(self)(**{**self.config(), **kwargs})

    def config(self) -> dict:
        """The constructor arguments that rebuild this game."""
        return {"max_turns": self.max_turns}

    def close(self) -> None:
        """Games hold no resources."""

    @property
    def unwrapped(self):
        return self

    # -- for subclasses ----------------------------------------------------------------------

    def _new_episode(self) -> str:
        raise NotImplementedError

    def _move(self, move: str) -> tuple[str, float, bool, dict]:
        raise NotImplementedError

    def _random_move(self) -> str:
        raise NotImplementedError

    def _solver_move(self) -> str:
        raise NotImplementedError
