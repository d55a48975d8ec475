"""GEM's envs hosted inside a sandbox: an image with gem-llm (made by pip in a sandbox and saved as
a snapshot), GEM's GuessTheNumber played there by binary search to full reward."""
import re

import pytest

from tumbler.envs.hosted import HostedEnv
from tumbler.errors import InvalidRequest, NotFound
from tumbler.runtime.pip_images import GEM_IMAGE, build_gem_image

BUILD_COMMAND = "tumbler image add-pip gem gem-llm==0.1.0 --check 'import gem'"  # or `make gem-image`


def play_by_binary_search(env, seed):
    """One episode of GEM's GuessTheNumber; returns (first observation, rewards, last observation)."""
    first, _ = env.reset(seed=seed)
    lo, hi = map(int, re.search(r"between (\d+) and (\d+)", first).groups())
    rewards, done, obs = [], False, first
    while not done:
        guess = (lo + hi) // 2
        obs, reward, terminated, truncated, info = env.step(f"My guess: \\boxed{{{guess}}}")
        rewards.append(reward)
        done = terminated or truncated
        if "higher" in obs:
            lo = guess + 1
        elif "lower" in obs:
            hi = guess - 1
    return first, rewards, obs


def check_guess_the_number(sandbox):
    for gem_id in ("game:GuessTheNumber-v0-easy", "game:GuessTheNumber-v0-hard"):
        env = HostedEnv(sandbox, f"gem:{gem_id}")
        for seed in range(3):
            first, rewards, last = play_by_binary_search(env, seed)
            assert "Guess The Number" in first
            assert rewards[-1] == 1.0 and sum(rewards) == 1.0, (gem_id, seed, rewards, last)
            assert "Congratulations" in last
        env.close()


@pytest.fixture
def gem_sandbox(runtime, make_sandbox):
    if not runtime.images.exists(GEM_IMAGE):
        pytest.skip(f"no image {GEM_IMAGE!r}: build it with `{BUILD_COMMAND}`")
    return make_sandbox(image=GEM_IMAGE)


@pytest.mark.slow
def test_the_gem_image_builds_and_hosts_gem(runtime, make_sandbox):
    image = build_gem_image(runtime=runtime)   # cached by name: built once
    assert image.parent == "debian-pip"
    check_guess_the_number(make_sandbox(image=GEM_IMAGE))


def test_gem_guess_the_number_is_won_by_binary_search_in_a_sandbox(gem_sandbox):
    check_guess_the_number(gem_sandbox)
    assert gem_sandbox.call("env.list")[0]["open"] == []


def test_a_hosted_gem_env_plays_like_gem_in_process(gem_sandbox):
    gem = pytest.importorskip("gem")
    hosted, local = HostedEnv(gem_sandbox, "gem:game:GuessTheNumber-v0-hard"), \
        gem.make("game:GuessTheNumber-v0-hard")
    assert hosted.reset(seed=11)[0] == local.reset(seed=11)[0]
    for guess in (25, 12, 40):
        action = f"\\boxed{{{guess}}}"
        assert hosted.step(action)[:4] == local.step(action)[:4]


def test_gem_ids_are_checked_in_the_sandbox(gem_sandbox):
    with pytest.raises(NotFound, match="did you mean game:GuessTheNumber-v0-easy"):
        HostedEnv(gem_sandbox, "gem:game:GuessTheNumbr-v0-easy")


def test_an_image_without_gem_says_how_to_get_one(sandbox):
    with pytest.raises(InvalidRequest, match="tumbler image add-pip gem gem-llm"):
        HostedEnv(sandbox, "gem:game:GuessTheNumber-v0-easy")
