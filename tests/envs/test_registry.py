"""The registry: ids, lazy imports, third-party envs by entry point, clear errors."""
import sys

import pytest

from tumbler import envs
from tumbler.envs import registration
from tumbler.errors import AlreadyExists, InvalidRequest, NotFound


def test_builtins_are_listed():
    assert {"Sokoban-v0", "FrozenLake-v0", "GuessTheNumber-v0", "Countdown-v0", "ToolUse-v0",
            "Terminal-v0"} <= set(envs.registered())


def test_unknown_id_names_close_matches():
    with pytest.raises(NotFound, match="did you mean Sokoban-v0"):
        envs.make("sokoban-v0")


def test_register_imports_only_on_make(tmp_path, monkeypatch):
    (tmp_path / "lazy_env_mod.py").write_text(
        "from tumbler.agent.envgames import GuessTheNumber\n"
        "class Tiny(GuessTheNumber):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    envs.register("Tiny-v0", "lazy_env_mod:Tiny", replace=True, high=3)
    assert "lazy_env_mod" not in sys.modules
    env = envs.make("Tiny-v0")
    assert env.unwrapped.high == 3 and "lazy_env_mod" in sys.modules
    assert envs.make("Tiny-v0", high=9).unwrapped.high == 9


def test_register_errors():
    with pytest.raises(AlreadyExists):
        envs.register("Sokoban-v0", "tumbler.agent.envgames:Sokoban")
    with pytest.raises(InvalidRequest, match="module:Class"):
        envs.register("Bad-v0", "no_colon_here")
    envs.register("Missing-v0", "no_such_module_xyz:Env", replace=True)
    with pytest.raises(NotFound, match="cannot import"):
        envs.make("Missing-v0")


def test_third_party_envs_by_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "tumbler_plugin_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tumbler-plugin-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[tumbler.envs]\nPluginLake-v0 = tumbler.agent.envgames:FrozenLake\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registration, "_plugins_loaded", False)
    env = envs.make("PluginLake-v0", size=4)
    assert env.reset(seed=0)[0].count("\n") >= 3
    assert "PluginLake-v0" in envs.registered()
