"""The built-in games: GEM's reset/step contract, seeds, reference solvers and random baselines."""
import pytest

from tumbler import envs
from tumbler.errors import Conflict, InvalidRequest

GAMES = ["Sokoban-v0", "FrozenLake-v0", "GuessTheNumber-v0", "Countdown-v0"]


def play(env, policy, seed):
    obs, info = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy(env))
        total += reward
        done = terminated or truncated
    return total


@pytest.mark.parametrize("env_id", GAMES)
def test_contract(env_id):
    env = envs.make(env_id)
    assert isinstance(env, envs.Env)
    obs, info = env.reset(seed=0)
    assert isinstance(obs, str) and isinstance(info, dict)
    obs, reward, terminated, truncated, info = env.step(env.sample_random_action())
    assert isinstance(obs, str) and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool) and isinstance(info, dict)


@pytest.mark.parametrize("env_id", GAMES)
def test_same_seed_same_instance(env_id):
    def fingerprint(env, seed):
        # The prompt, then the answer to a fixed move (GuessTheNumber's prompt hides the number).
        return env.reset(seed=seed)[0], env.step("\\boxed{50}")[0]
    a, b = envs.make(env_id), envs.make(env_id)
    assert fingerprint(a, 42) == fingerprint(b, 42)
    assert [fingerprint(a, s) for s in range(5)] == [fingerprint(b, s) for s in range(5)]
    assert len({fingerprint(a, s) for s in range(10)}) > 1


@pytest.mark.parametrize("env_id", GAMES)
def test_reference_solver_wins_and_random_play_mostly_loses(env_id):
    env = envs.make(env_id)
    solved = [play(env, lambda e: e.unwrapped.reference_action(), s) for s in range(20)]
    assert solved == [1.0] * 20
    random_wins = sum(play(env, lambda e: e.sample_random_action(), s) for s in range(100))
    assert random_wins <= 15


@pytest.mark.parametrize("env_id,kwargs", [
    ("Sokoban-v0", {"size": 8, "boxes": 3, "walls": 4}),
    ("FrozenLake-v0", {"size": 10, "hole_ratio": 0.3}),
    ("GuessTheNumber-v0", {"low": 1, "high": 1000, "max_turns": 10}),
    ("Countdown-v0", {"numbers": 5, "max_number": 50}),
])
def test_sizes_are_configurable_and_still_solvable(env_id, kwargs):
    env = envs.make(env_id, **kwargs)
    assert [play(env, lambda e: e.unwrapped.reference_action(), s) for s in range(5)] == [1.0] * 5


def test_sokoban_room_has_the_asked_size_and_boxes():
    env = envs.make("Sokoban-v0", size=7, boxes=3)
    obs, _ = env.reset(seed=3)
    room = obs.splitlines()[-7:]
    assert all(len(row) == 7 for row in room)
    assert sum(row.count("$") + row.count("*") for row in room) == 3


def test_invalid_move_is_answered_not_raised():
    env = envs.make("FrozenLake-v0")
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("\\boxed{jump}")
    assert "Invalid move" in obs and reward == 0.0 and not terminated and info["invalid_action"]


def test_countdown_refuses_numbers_it_was_not_given_and_code():
    env = envs.make("Countdown-v0")
    env.reset(seed=0)
    obs, *_ = env.step("\\boxed{__import__('os').system('true')}")
    assert "Invalid expression" in obs
    env.reset(seed=0)
    obs, reward, *_ = env.step("\\boxed{999 + 1}")
    assert "not available" in obs and reward == 0.0


def test_step_before_reset_and_after_done_are_conflicts():
    env = envs.make("GuessTheNumber-v0")
    with pytest.raises(Conflict, match="reset"):
        env.step("\\boxed{1}")
    env.reset(seed=1)
    while True:
        *_, terminated, truncated, _ = env.step(env.unwrapped.reference_action())
        if terminated or truncated:
            break
    with pytest.raises(Conflict, match="episode is over"):
        env.step("\\boxed{1}")
    env.reset(seed=2)
    env.step("\\boxed{50}")


def test_bad_kwargs_are_invalid_requests():
    with pytest.raises(InvalidRequest, match="size"):
        envs.make("FrozenLake-v0", size=50)
    with pytest.raises(InvalidRequest, match="unexpected keyword"):
        envs.make("Sokoban-v0", colour="red")


def test_spawn_copies_configuration():
    env = envs.make("FrozenLake-v0", size=4)
    twin = env.spawn()
    assert twin.unwrapped.size == 4 and twin.unwrapped is not env.unwrapped
    assert twin.reset(seed=5)[0] == env.reset(seed=5)[0]
