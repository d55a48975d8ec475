"""Breadth-first search over game states: proves generated puzzles solvable and plans solutions."""
from __future__ import annotations

from collections import deque
from typing import Callable, Hashable, Iterable

MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def shortest_plan(start: Hashable, successors: Callable[[Hashable], Iterable[tuple[str, Hashable]]],
                  is_goal: Callable[[Hashable], bool], max_states: int = 200_000) -> list[str] | None:
    """The shortest list of moves from `start` to a goal state, or None when there is none
    within `max_states` visited states (a bound that keeps generation time predictable)."""
    if is_goal(start):
        return []
    parents: dict = {start: None}
    queue = deque([start])
    while queue and len(parents) <= max_states:
        state = queue.popleft()
        for move, nxt in successors(state):
            if nxt in parents:
                continue
            parents[nxt] = (state, move)
            if is_goal(nxt):
                return _unwind(parents, nxt)
            queue.append(nxt)
    return None


def _unwind(parents: dict, state) -> list[str]:
    plan = []
    while parents[state] is not None:
        state, move = parents[state]
        plan.append(move)
    return plan[::-1]
