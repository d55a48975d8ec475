"""The tool-use env: python and bash run in a real sandbox, the boxed answer is checked."""
import pytest

from tumbler import envs


@pytest.fixture
def tooluse(runtime):
    env = envs.make("ToolUse-v0", runtime=runtime, tool_timeout=2.0)
    yield env
    env.close()


def test_reference_solver_answers_correctly(tooluse):
    for seed in range(4):
        tooluse.reset(seed=seed)
        obs, reward, terminated, *_ = tooluse.step(tooluse.unwrapped.reference_action())
        assert reward == 0.0 and not terminated
        obs, reward, terminated, *_ = tooluse.step(tooluse.unwrapped.reference_action(obs))
        assert (obs, reward, terminated) == ("Correct.", 1.0, True)


def test_tools_run_in_the_sandbox(tooluse):
    tooluse.reset(seed=0)
    assert tooluse.step("<bash>hostname</bash>")[0].strip() == "sandbox"
    obs, *_, info = tooluse.step("<python>import os; print(os.getuid())</python>")
    assert obs.strip() == "0" and info["use_tool"]
    assert "timed out after 2.0 s" in tooluse.step("<bash>sleep 10</bash>")[0]


def test_wrong_answers_and_format_errors(tooluse):
    tooluse.reset(seed=0)
    obs, reward, terminated, truncated, info = tooluse.step("no idea")
    assert reward == -0.1 and info["format_error"] and not terminated
    assert tooluse.step("\\boxed{-1}")[1:3] == (0.0, True)


def test_random_baseline_is_far_below(tooluse):
    wins = 0
    for seed in range(10):
        tooluse.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = tooluse.step(tooluse.sample_random_action())
            done = terminated or truncated
        wins += reward == 1.0
    assert wins <= 1
