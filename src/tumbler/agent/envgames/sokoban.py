"""Sokoban: push every box ($) onto a goal (.) in a walled room; boxes cannot be pulled."""
from __future__ import annotations

from .base import GameEnv
from .search import MOVES, shortest_plan

# Search bound per candidate room: solvable rooms of the default sizes need far fewer states.
MAX_STATES = 50_000
MAX_TRIES = 500


class Sokoban(GameEnv):
    """Args: size (room side including walls, 5..9), boxes (1..3), walls (extra inner walls),
    min_moves (shortest solution at least this long, so that puzzles are not trivial), max_turns.
    Every generated room is solved by search before it is handed out."""

    name = "Sokoban"

    def __init__(self, size: int = 6, boxes: int = 2, walls: int = 2, min_moves: int = 6,
                 max_turns: int = 60, seed: int | None = None):
        if not isinstance(size, int) or not 5 <= size <= 9:
            raise ValueError(f"size must be an integer from 5 to 9, got {size!r}")
        if not isinstance(boxes, int) or not 1 <= boxes <= 3:
            raise ValueError(f"boxes must be 1, 2 or 3, got {boxes!r}")
        if not isinstance(walls, int) or not 0 <= walls <= (size - 2) ** 2 // 3:
            raise ValueError(f"walls must be from 0 to {(size - 2) ** 2 // 3}, got {walls!r}")
        super().__init__(max_turns, seed)
        self.size, self.n_boxes, self.n_walls, self.min_moves = size, boxes, walls, min_moves
        self.walls: frozenset = frozenset()
        self.goals: frozenset = frozenset()
        self.state = ((1, 1), frozenset())

    def config(self) -> dict:
        return {**super().config(), "size": self.size, "boxes": self.n_boxes,
                "walls": self.n_walls, "min_moves": self.min_moves}

    def _new_episode(self) -> str:
        for _ in range(MAX_TRIES):
            self._place()
            plan = self._plan()
            if plan is not None and len(plan) >= self.min_moves:
                break
        else:
            raise ValueError(f"no solvable {self.size}x{self.size} room with {self.n_boxes} boxes "
                             f"and >= {self.min_moves} moves in {MAX_TRIES} tries; lower min_moves")
        return ("Push every box ($) onto a goal (.) by walking into it; you (@) cannot pull boxes "
                "and walls (#) block you. * is a box on a goal, + is you on a goal.\n"
                "Moves: up, down, left, right. Answer with one move in \\boxed{}, e.g. \\boxed{left}.\n"
                + self.render())

    def _place(self) -> None:
        n = self.size
        border = {(r, c) for r in range(n) for c in range(n) if r in (0, n - 1) or c in (0, n - 1)}
        inner = [(r, c) for r in range(1, n - 1) for c in range(1, n - 1)]
        picks = self.rng.sample(inner, self.n_walls + 2 * self.n_boxes + 1)
        self.walls = frozenset(border | set(picks[:self.n_walls]))
        rest = picks[self.n_walls:]
        self.goals = frozenset(rest[:self.n_boxes])
        boxes = frozenset(rest[self.n_boxes:2 * self.n_boxes])
        self.state = (rest[-1], boxes)

    def _plan(self) -> list[str] | None:
        return shortest_plan(self.state, self._successors, lambda s: s[1] == self.goals, MAX_STATES)

    def _successors(self, state):
        for move in MOVES:
            nxt = self._after(state, move)
            if nxt is not state:
                yield move, nxt

    def _after(self, state, move: str):
        """The state after `move`, or `state` itself when the move is blocked."""
        (r, c), boxes = state
        dr, dc = MOVES[move]
        ahead = (r + dr, c + dc)
        if ahead in self.walls:
            return state
        if ahead in boxes:
            beyond = (ahead[0] + dr, ahead[1] + dc)
            if beyond in self.walls or beyond in boxes:
                return state
            return ahead, (boxes - {ahead}) | {beyond}
        return ahead, boxes

    def _move(self, move: str):
        if move.lower() not in MOVES:
            return (f"Invalid move {move!r}: use up, down, left or right.\n" + self.render(),
                    0.0, False, {"invalid_action": True})
        self.state = self._after(self.state, move.lower())
        if self.state[1] == self.goals:
            return "All boxes are on goals. Solved!\n" + self.render(), 1.0, True, {"success": True}
        return self.render(), 0.0, False, {}

    def render(self) -> str:
        player, boxes = self.state
        rows = []
        for r in range(self.size):
            row = ""
            for c in range(self.size):
                p = (r, c)
                if p in self.walls:
                    row += "#"
                elif p == player:
                    row += "+" if p in self.goals else "@"
                elif p in boxes:
                    row += "*" if p in self.goals else "$"
                else:
                    row += "." if p in self.goals else " "
            rows.append(row)
        return "\n".join(rows)

    def _random_move(self) -> str:
        return self.rng.choice(list(MOVES))

    def _solver_move(self) -> str:
        plan = self._plan()
        return plan[0] if plan else "up"
