"""Environments for LLM agents with GEM's interface, and the envs that ship with Tumbler.

    from tumbler import envs
    env = envs.make("Sokoban-v0", size=7)           # or "gem:game:GuessTheNumber-v0-easy"
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("\\boxed{up}")

Modules: `core` (Env, Wrapper), `registration` (register, make), `wrappers`, `vector`,
`games` (the standard-library games, whose code lives in `tumbler.agent.envgames`), `tooluse`,
`terminal` and `tasks/` (terminal tasks as data), `hosted` (envs run inside sandboxes),
`gemenvs` (GEM's envs made here) and `gemcompat` (ours registered in GEM). Imports: errors,
local, agent; never server or train.
"""
from tumbler.envs.core import Env, Wrapper
from tumbler.envs.registration import EnvSpec, make, register, registered, spec
from tumbler.envs.vector import AsyncVectorEnv, SyncVectorEnv
from tumbler.envs.wrappers import ActionParser, ChatFormat, EnvCrashed, EpisodeGuard, TimeLimit

__all__ = ["Env", "Wrapper", "EnvSpec", "make", "register", "registered", "spec",
           "AsyncVectorEnv", "SyncVectorEnv", "ActionParser", "ChatFormat", "EnvCrashed",
           "EpisodeGuard", "TimeLimit"]
