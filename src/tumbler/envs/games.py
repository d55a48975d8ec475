"""The built-in games on the host. Their code lives in `tumbler.agent.envgames` (standard library
only) so that it travels into every sandbox with the agent's read-only mount and can be hosted
there; this module is its name on the host side."""
from tumbler.agent.envgames import (GAMES, Countdown, FrozenLake, GameEnv, GuessTheNumber, Sokoban,
                                    extract_move, make_game)

__all__ = ["GAMES", "GameEnv", "Countdown", "FrozenLake", "GuessTheNumber", "Sokoban",
           "extract_move", "make_game"]
