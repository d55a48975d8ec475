"""Envs hosted in real sandboxes: same episodes as in-process, vector form, and faults that end
episodes instead of hanging them."""
import time

import pytest

from tumbler import envs
from tumbler.envs.hosted import HostedEnv, HostedVectorEnv
from tumbler.errors import Conflict, InvalidRequest, NotFound, SandboxError

SLOW_ENV = '''
import time
class Slow:
    def reset(self, seed=None):
        return "ready", {}
    def step(self, action):
        time.sleep(float(action))
        return "woke", 0.0, False, False, {}
    def close(self):
        pass
'''


def test_hosted_game_matches_in_process(sandbox):
    hosted, local = HostedEnv(sandbox, "Sokoban-v0", size=7), envs.make("Sokoban-v0", size=7)
    assert hosted.reset(seed=4)[0] == local.reset(seed=4)[0]
    total, done = 0.0, False
    while not done:
        action = hosted.reference_action()
        obs, reward, terminated, truncated, info = hosted.step(action)
        assert obs == local.step(action)[0]
        total += reward
        done = terminated or truncated
    assert total == 1.0
    assert any(e["handle"] == hosted.handle for e in sandbox.call("env.list")[0]["open"])
    hosted.close()
    assert sandbox.call("env.list")[0]["open"] == []


def test_hosted_contract_errors(sandbox):
    with pytest.raises(InvalidRequest, match="unknown game"):
        HostedEnv(sandbox, "Nope-v0")
    with pytest.raises(InvalidRequest, match="size"):
        HostedEnv(sandbox, "FrozenLake-v0", size=99)
    with pytest.raises(NotFound, match="cannot load"):
        HostedEnv(sandbox, "no_such_module:Env")
    env = HostedEnv(sandbox, "GuessTheNumber-v0")
    with pytest.raises(Conflict, match="reset"):
        env.step("\\boxed{1}")
    env.reset(seed=0)
    while not any(env.step(env.reference_action())[2:4]):
        pass
    with pytest.raises(Conflict, match="episode is over"):
        env.step("\\boxed{1}")


def test_a_hanging_step_is_truncated_and_the_env_recovers(sandbox):
    # importable by the image's python3: its site-packages (the agent adds them for module:Class)
    sandbox.write_file("/usr/local/lib/python3.11/dist-packages/slowenv.py", SLOW_ENV)
    env = HostedEnv(sandbox, "slowenv:Slow", step_timeout=0.5)
    env.reset()
    start = time.monotonic()
    obs, reward, terminated, truncated, info = env.step("30")
    assert time.monotonic() - start < 5
    assert truncated and not terminated and "longer than 0.5 s" in obs and info["error"]
    assert env.reset() == ("ready", {})
    assert env.step("0")[0] == "woke"


def test_a_dead_sandbox_truncates_then_refuses(make_sandbox):
    sb = make_sandbox()
    env = HostedEnv(sb, "FrozenLake-v0")
    env.reset(seed=0)
    sb.runtime.stop(sb.id)
    start = time.monotonic()
    obs, reward, terminated, truncated, info = env.step("\\boxed{down}")
    assert time.monotonic() - start < 10
    assert truncated and "sandbox failed" in obs
    with pytest.raises(SandboxError):
        env.reset()
    env.close()


def test_hosted_vector_env(runtime):
    with HostedVectorEnv("FrozenLake-v0", n=4, sandbox_options={"runtime": runtime}) as vec:
        ids = [sb.id for sb in vec.sandboxes]
        obs, _ = vec.reset(seed=0)
        assert obs == [envs.make("FrozenLake-v0").reset(seed=i)[0] for i in range(4)]
        actions = [env.reference_action() for env in vec.envs]
        obs, rewards, terminated, truncated, infos = vec.step(actions)
        assert len(rewards) == 4 and not any(truncated)
    from checks import leftovers
    assert all(leftovers(runtime, i) == [] for i in ids)
