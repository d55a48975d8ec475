"""Tumbler's envs as GEM (PyPI `gem-llm`) envs:

    register_in_gem()                                            # Tumbler envs as GEM envs:
    vec = gem.make_vec(["tumbler:Sokoban-v0"] * 4, seed=0)       # GEM's make, wrappers, vectors

The other direction, `tumbler.envs.make("gem:...")`, is `gemenvs.py`. GEM is imported only when
used (it takes ~0.7 s and pulls numpy and sympy).
"""
from __future__ import annotations

from tumbler.envs.core import Env
from tumbler.envs.gemenvs import import_gem
from tumbler.envs.registration import make, registered

GEM_NAMESPACE = "tumbler:"


def register_in_gem(namespace: str = GEM_NAMESPACE) -> list[str]:
    """Register every Tumbler env in GEM's registry as namespace + id (once; later calls add only
    new ids) and make Tumbler envs count as `gem.core.Env`. Returns the GEM ids added."""
    gem = import_gem()
    from gem.envs.registration import ENV_REGISTRY
    gem.core.Env.register(Env)
    added = []
    for env_id in registered():
        gem_id = namespace + env_id
        if gem_id not in ENV_REGISTRY:
            gem.register(gem_id, entry_point=_maker(env_id))
            added.append(gem_id)
    return added


def _maker(env_id: str):
    def make_env(**kwargs):
        return make(env_id, **kwargs)
    return make_env
