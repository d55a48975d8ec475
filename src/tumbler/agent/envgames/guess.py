"""GuessTheNumber: find a hidden integer from higher/lower hints."""
from __future__ import annotations

from .base import GameEnv


class GuessTheNumber(GameEnv):
    """Args: low, high (inclusive range), max_turns (guesses allowed)."""

    name = "GuessTheNumber"

    def __init__(self, low: int = 1, high: int = 100, max_turns: int = 7, seed: int | None = None):
        if not (isinstance(low, int) and isinstance(high, int)) or low >= high:
            raise ValueError(f"need integers low < high, got low={low!r} high={high!r}")
        super().__init__(max_turns, seed)
        self.low, self.high = low, high
        self.target = low
        self.bounds = (low, high)

    def config(self) -> dict:
        return {**super().config(), "low": self.low, "high": self.high}

    def _new_episode(self) -> str:
        self.target = self.rng.randint(self.low, self.high)
        self.bounds = (self.low, self.high)
        return (f"Guess the number between {self.low} and {self.high} (inclusive) in at most "
                f"{self.max_turns} guesses. After each guess you hear 'higher' or 'lower'.\n"
                "Answer with your guess in \\boxed{}, e.g. \\boxed{50}.")

    def _move(self, move: str):
        try:
            guess = int(move)
        except ValueError:
            return f"Invalid guess {move!r}: answer with an integer.", 0.0, False, {"invalid_action": True}
        if guess == self.target:
            return f"Correct! The number was {guess}.", 1.0, True, {"success": True}
        lo, hi = self.bounds
        if guess < self.target:
            self.bounds = (max(lo, guess + 1), hi)
            return f"{guess} is too low: the number is higher.", 0.0, False, {}
        self.bounds = (lo, min(hi, guess - 1))
        return f"{guess} is too high: the number is lower.", 0.0, False, {}

    def _random_move(self) -> str:
        return str(self.rng.randint(self.low, self.high))

    def _solver_move(self) -> str:
        # Binary search over what the hints so far allow.
        lo, hi = self.bounds
        return str((lo + hi) // 2)
