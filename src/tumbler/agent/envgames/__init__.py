"""Built-in text games, standard library only and relative imports only, so the same code runs on
the host (`tumbler.envs.games`) and inside a sandbox as `agent.envgames`, hosted by the agent
(`agent.envhost`): it travels into every sandbox with the agent's read-only mount.

    GAMES: name -> class        make_game("Sokoban", size=7, seed=3)
"""
from __future__ import annotations

from .base import GameEnv, extract_move
from .codefn import Code
from .countdown import Countdown
from .frozenlake import FrozenLake
from .guess import GuessTheNumber
from .mathproblems import Math
from .sokoban import Sokoban

GAMES = {cls.name: cls for cls in (Sokoban, FrozenLake, GuessTheNumber, Countdown, Math, Code)}


def make_game(name: str, **kwargs) -> GameEnv:
    """A game by name ("Sokoban" or "Sokoban-v0"); ValueError/TypeError for unknown names or kwargs."""
    cls = GAMES.get(name.split("-v")[0])
    if cls is None:
        raise ValueError(f"unknown game {name!r}; known: {', '.join(sorted(GAMES))}")
    return cls(**kwargs)


__all__ = ["GAMES", "GameEnv", "Code", "Countdown", "Math", "FrozenLake", "GuessTheNumber", "Sokoban",
           "extract_move", "make_game"]
