"""Vector envs: env i seeded seed + i, sync and threaded forms agree, autoreset, bad input."""
import pytest

from tumbler import envs
from tumbler.errors import InvalidRequest


def test_env_i_gets_seed_plus_i():
    vec = envs.SyncVectorEnv([envs.make("Sokoban-v0") for _ in range(3)])
    obs, _ = vec.reset(seed=10)
    assert obs == [envs.make("Sokoban-v0").reset(seed=10 + i)[0] for i in range(3)]


@pytest.mark.parametrize("cls", [envs.SyncVectorEnv, envs.AsyncVectorEnv])
def test_sync_and_async_step_the_same(cls):
    with cls([lambda: envs.make("GuessTheNumber-v0") for _ in range(4)]) as vec:
        vec.reset(seed=0)
        out = [vec.step(["\\boxed{50}"] * 4) for _ in range(3)]
    with envs.SyncVectorEnv([envs.make("GuessTheNumber-v0") for _ in range(4)]) as ref:
        ref.reset(seed=0)
        assert out == [ref.step(["\\boxed{50}"] * 4) for _ in range(3)]


def test_autoreset_keeps_the_final_observation():
    vec = envs.AsyncVectorEnv([envs.make("Countdown-v0") for _ in range(2)])
    vec.reset(seed=0)
    obs, rewards, terminated, truncated, infos = vec.step(["\\boxed{1}", "\\boxed{1}"])
    assert truncated == [True, True]
    assert all("final_obs" in i for i in infos) and all(o.startswith("Using the numbers") for o in obs)
    vec.close()


def test_wrong_number_of_actions_or_seeds():
    vec = envs.SyncVectorEnv([envs.make("Countdown-v0") for _ in range(2)])
    with pytest.raises(InvalidRequest, match="2 envs"):
        vec.reset(seed=[1, 2, 3])
    vec.reset(seed=0)
    with pytest.raises(InvalidRequest, match="1 actions for 2 envs"):
        vec.step(["x"])


def test_errors_say_which_env():
    vec = envs.SyncVectorEnv([envs.make("Countdown-v0") for _ in range(2)])
    with pytest.raises(envs.EnvCrashed.__mro__[1], match="env 0: .*reset"):
        vec.step(["a", "b"])
