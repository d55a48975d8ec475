"""Single-turn RLVR envs: Math-v0 (generated problems, exact answers) and Code-v0 (hidden tests
run in the sandbox, the expected values kept out of the candidate's reach)."""
from fractions import Fraction

import pytest

from tumbler import envs
from tumbler.agent.envgames.mathproblems import KINDS, parse_number
from tumbler.envs.hosted import HostedEnv


@pytest.mark.parametrize("kind", KINDS)
def test_math_answers_are_exact_and_checked_by_value(kind):
    env = envs.make("Math-v0", level=3, kinds=[kind])
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        assert "\\boxed{}" in obs
        answer = env.unwrapped.answer
        _, reward, terminated, _, info = env.step(env.unwrapped.reference_action())
        assert (reward, terminated, info["success"]) == (1.0, True, True)
        env.reset(seed=seed)
        _, reward, _, truncated, info = env.step("\\boxed{" + str(answer + 1) + "}")
        assert (reward, truncated, info["success"]) == (0.0, True, False)   # one try
    again = envs.make("Math-v0", level=3, kinds=[kind])
    assert again.reset(seed=7)[0] == env.reset(seed=7)[0]


def test_math_reads_integers_fractions_and_decimals():
    assert parse_number("x = 1,250") == 1250
    assert parse_number(" 6 / 8 ") == Fraction(3, 4)
    assert parse_number("0.75") == Fraction(3, 4)
    for bad in ("1/0", "2^10", "seven", "1e400", "9" * 80, "eval('1')"):
        assert parse_number(bad) is None


def test_math_refuses_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        envs.make("Math-v0", level=4)
    with pytest.raises(ValueError, match="kinds"):
        envs.make("Math-v0", kinds=["calculus"])


def test_code_refuses_to_run_candidates_on_the_host():
    with pytest.raises(RuntimeError, match="sandbox"):
        envs.make("Code-v0")


def test_code_hidden_tests_run_in_the_sandbox(sandbox):
    env = HostedEnv(sandbox, "Code-v0", tasks=["sum_even", "balanced", "word_count"])
    for seed in range(6):
        env.reset(seed=seed)
        _, reward, terminated, _, info = env.step(env.reference_action())
        assert (reward, terminated, info["success"]) == (1.0, True, True)
    env.reset(seed=0)
    obs, reward, _, truncated, info = env.step("```python\ndef sum_even(xs):\n    return 0\n```")
    assert 0 <= reward < 1 and truncated and not info["success"] and "expected" in obs


HOSTILE = {
    # print what a results line looks like, then exit before any call
    "forged results": "import os\nos.write(1, b'\\n@@RESULTS@@' + b'[{\"value\": 0}]' * 1)\nraise SystemExit\n",
    # kill the env's process (the candidate runs as nobody: EPERM)
    "kill the env": "import os\nos.kill(os.getppid(), 9)\n",
    # read the env's memory for the expected values (not its user: EACCES)
    "read the env": "open(f'/proc/{__import__(\"os\").getppid()}/mem', 'rb').read(1)\n",
    "hang": "while True:\n    pass\n",
    "eat memory": "x = bytearray(4 << 30)\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_candidate_earns_nothing_and_the_env_survives(sandbox, name):
    env = HostedEnv(sandbox, "Code-v0", tasks=["sum_even"], max_turns=2)
    env.reset(seed=1)
    code = HOSTILE[name] + "def sum_even(xs):\n    return 0\n"
    obs, reward, terminated, _, info = env.step("```python\n" + code + "```")
    assert not info["success"] and reward < 1, obs
    # the env is alive and still judges honestly
    _, reward, terminated, _, info = env.step(env.reference_action())
    assert (reward, terminated) == (1.0, True)
