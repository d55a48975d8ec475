"""GEM's envs as Tumbler envs: `tumbler.envs.make("gem:game:GuessTheNumber-v0-easy")` comes here.

GEM (PyPI `gem-llm`) is imported only when a GEM env is made (it takes ~0.7 s and pulls numpy
and sympy). The other direction, Tumbler's envs in GEM's registry, is `gemcompat.py`.
"""
from __future__ import annotations

import difflib

from tumbler.envs.wrappers import EpisodeGuard
from tumbler.errors import InvalidRequest, NotFound


def import_gem():
    """The `gem` package; InvalidRequest saying what to install when it is missing."""
    try:
        import gem
    except ImportError:
        raise InvalidRequest("GEM envs need the gem-llm package: pip install gem-llm") from None
    return gem


def make_gem(gem_id: str, **kwargs):
    """A GEM env by its GEM id, guarded like every env `make` returns."""
    gem = import_gem()
    from gem.envs.registration import ENV_REGISTRY
    if gem_id not in ENV_REGISTRY:
        close = difflib.get_close_matches(gem_id, list(ENV_REGISTRY), n=3)
        raise NotFound(f"GEM has no env {gem_id!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    try:
        env = gem.make(gem_id, **kwargs)
    except TypeError as exc:
        raise InvalidRequest(f"bad arguments for GEM env {gem_id!r}: {exc}") from None
    env.env_id = f"gem:{gem_id}"
    return EpisodeGuard(env)
