"""Wrappers: step limits, action parsing with a format penalty, chat formatting, crash reports."""
import pytest

from tumbler import envs
from tumbler.envs import ActionParser, ChatFormat, EnvCrashed, TimeLimit


class Flaky(envs.Env):
    """An env whose step raises: what EpisodeGuard must report."""

    def reset(self, seed=None):
        return "start", {}

    def step(self, action):
        raise RuntimeError("boom")


def test_time_limit_truncates():
    env = TimeLimit(envs.make("FrozenLake-v0", max_turns=100), max_steps=3)
    env.reset(seed=0)
    results = [env.step("\\boxed{left}") for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert results[-1][4]["time_limit"]


def test_action_parser_reads_boxed_and_penalises_malformed_replies():
    env = ActionParser(envs.make("GuessTheNumber-v0"), format_penalty=-0.5)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("I think 50")
    assert reward == -0.5 and info["format_error"] and not terminated and "\\boxed" in obs
    obs, reward, *_, info = env.step("Let me think... \\boxed{50}")
    assert info["parsed_action"] == "50" and "50" in obs


def test_action_parser_with_a_regex_and_termination():
    env = ActionParser(envs.make("FrozenLake-v0"), pattern=r"MOVE: (\w+)", terminate_on_error=True)
    env.reset(seed=0)
    assert env.step("MOVE: down")[4]["parsed_action"] == "down"
    _, reward, terminated, *_ = env.step("down")
    assert terminated and reward == -0.1
    with pytest.raises(ValueError, match="bad action pattern"):
        ActionParser(envs.make("FrozenLake-v0"), pattern="(")


def test_chat_format_builds_the_conversation():
    env = ChatFormat(envs.make("GuessTheNumber-v0"), system_prompt="Play well.")
    messages, _ = env.reset(seed=0)
    assert [m["role"] for m in messages] == ["system", "user"]
    messages, *_ = env.step("\\boxed{50}")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "\\boxed{50}"


def test_chat_format_uses_a_tokenizers_template():
    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"
    env = ChatFormat(envs.make("GuessTheNumber-v0"), tokenizer=Template(), max_turns=1)
    prompt, _ = env.reset(seed=0)
    assert prompt.startswith("<user>Guess the number") and prompt.endswith("<assistant>")
    for guess in ("10", "20"):
        prompt, *_ = env.step(f"\\boxed{{{guess}}}")
    assert "<assistant>\\boxed{20}" in prompt and "\\boxed{10}" not in prompt


def test_an_env_that_raises_is_reported_by_name_and_needs_a_reset():
    envs.register("Flaky-v0", Flaky, replace=True)
    env = envs.make("Flaky-v0")
    env.reset()
    with pytest.raises(EnvCrashed, match="Flaky-v0.step raised RuntimeError: boom"):
        env.step("x")
    with pytest.raises(envs.EnvCrashed.__mro__[1]):  # TumblerError: Conflict until reset
        env.step("x")


def test_wrappers_forward_attributes_and_spawn():
    env = TimeLimit(envs.make("Sokoban-v0", size=7), max_steps=5)
    assert env.unwrapped.size == 7 and env.max_turns == 60
    twin = env.spawn()
    assert isinstance(twin, TimeLimit) and twin.max_steps == 5
