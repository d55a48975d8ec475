"""FrozenLake: walk from S to G on an n x n lake without stepping into a hole (H)."""
from __future__ import annotations

from .base import GameEnv
from .search import MOVES, shortest_plan


class FrozenLake(GameEnv):
    """Args: size (cells per side, 3..12), hole_ratio (share of cells that are holes, 0..0.5),
    max_turns. Every generated lake has a path from S to G (checked by search)."""

    name = "FrozenLake"

    def __init__(self, size: int = 6, hole_ratio: float = 0.25, max_turns: int = 30,
                 seed: int | None = None):
        if not isinstance(size, int) or not 3 <= size <= 12:
            raise ValueError(f"size must be an integer from 3 to 12, got {size!r}")
        if not isinstance(hole_ratio, (int, float)) or not 0 <= hole_ratio <= 0.5:
            raise ValueError(f"hole_ratio must be from 0 to 0.5, got {hole_ratio!r}")
        super().__init__(max_turns, seed)
        self.size, self.hole_ratio = size, float(hole_ratio)
        self.holes: frozenset = frozenset()
        self.pos = (0, 0)

    def config(self) -> dict:
        return {**super().config(), "size": self.size, "hole_ratio": self.hole_ratio}

    def _new_episode(self) -> str:
        self.pos = (0, 0)
        while True:
            self._place_holes()
            if self._plan() is not None:
                break
        return ("You are on a frozen lake. Walk from S to G without falling into a hole (H).\n"
                "Moves: up, down, left, right. Answer with one move in \\boxed{}, e.g. \\boxed{down}.\n"
                + self.render())

    def _place_holes(self) -> None:
        n = self.size
        cells = [(r, c) for r in range(n) for c in range(n) if (r, c) not in ((0, 0), (n - 1, n - 1))]
        self.holes = frozenset(self.rng.sample(cells, int(self.hole_ratio * n * n)))

    def _plan(self) -> list[str] | None:
        goal = (self.size - 1, self.size - 1)
        return shortest_plan(self.pos, self._successors, lambda p: p == goal)

    def _successors(self, pos):
        for move, (dr, dc) in MOVES.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if self._inside(nxt) and nxt not in self.holes:
                yield move, nxt

    def _inside(self, p) -> bool:
        return 0 <= p[0] < self.size and 0 <= p[1] < self.size

    def _move(self, move: str):
        delta = MOVES.get(move.lower())
        if delta is None:
            return (f"Invalid move {move!r}: use up, down, left or right.\n" + self.render(),
                    0.0, False, {"invalid_action": True})
        nxt = (self.pos[0] + delta[0], self.pos[1] + delta[1])
        if self._inside(nxt):
            self.pos = nxt
        if self.pos in self.holes:
            return "You fell into a hole. Game over.\n" + self.render(), 0.0, True, {"success": False}
        if self.pos == (self.size - 1, self.size - 1):
            return "You reached the goal!\n" + self.render(), 1.0, True, {"success": True}
        return self.render(), 0.0, False, {}

    def render(self) -> str:
        rows = []
        for r in range(self.size):
            row = ""
            for c in range(self.size):
                p = (r, c)
                row += ("P" if p == self.pos else "H" if p in self.holes
                        else "G" if p == (self.size - 1, self.size - 1) else "S" if p == (0, 0) else ".")
            rows.append(row)
        return "\n".join(rows)

    def _random_move(self) -> str:
        return self.rng.choice(list(MOVES))

    def _solver_move(self) -> str:
        plan = self._plan()
        return plan[0] if plan else "up"
