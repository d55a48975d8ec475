"""GEM (PyPI `gem-llm`) both ways.

    env = tumbler.envs.make("gem:game:GuessTheNumber-v0-easy")   # a GEM env as a Tumbler env
    register_in_gem()                                            # Tumbler envs as GEM envs:
    vec = gem.make_vec(["tumbler:Sokoban-v0"] * 4, seed=0)       # GEM's make, wrappers, vectors

GEM is imported only here and only when used (it takes ~0.7 s and pulls numpy and sympy).
"""
from __future__ import annotations

import difflib

from tumbler.envs.core import Env
from tumbler.envs.wrappers import EpisodeGuard
from tumbler.errors import InvalidRequest, NotFound

GEM_NAMESPACE = "tumbler:"


def _gem():
    try:
        import gem
    except ImportError:
        raise InvalidRequest("GEM envs need the gem-llm package: pip install gem-llm") from None
    return gem


def gem_ids() -> list[str]:
    """The ids GEM registers (without our "gem:" prefix)."""
    from gem.envs.registration import ENV_REGISTRY
    _gem()
    return sorted(ENV_REGISTRY)


def make_gem(gem_id: str, **kwargs):
    """A GEM env by its GEM id, guarded like every env `make` returns."""
    gem = _gem()
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


def register_in_gem(namespace: str = GEM_NAMESPACE) -> list[str]:
    """Register every Tumbler env in GEM's registry as namespace + id (once; later calls add only
    new ids) and make Tumbler envs count as `gem.core.Env`. Returns the GEM ids added."""
    gem = _gem()
    from gem.envs.registration import ENV_REGISTRY
    from tumbler.envs.registration import make, registered
    gem.core.Env.register(Env)
    added = []
    for env_id in registered():
        gem_id = namespace + env_id
        if gem_id not in ENV_REGISTRY:
            gem.register(gem_id, entry_point=_maker(make, env_id))
            added.append(gem_id)
    return added


def _maker(make, env_id: str):
    def make_env(**kwargs):
        return make(env_id, **kwargs)
    return make_env
