"""Terminal tasks in real sandboxes: every shipped reference solution passes its verifier,
doing nothing fails it, and what the agent tampers with outside workdir cannot fool it."""
import json

import pytest

from checks import leftovers
from tumbler import envs
from tumbler.envs.terminal import TerminalEnv, load_tasks, task_ids
from tumbler.errors import InvalidRequest, NotFound


@pytest.fixture
def terminal(runtime):
    made = []

    def make(**kwargs):
        env = TerminalEnv(runtime=runtime, **kwargs)
        made.append(env)
        return env
    yield make
    for env in made:
        ids = [sb.id for sb in (env.sandbox, env.verifier) if sb is not None]
        env.close()
        for sandbox_id in ids:
            assert leftovers(runtime, sandbox_id) == []


def test_at_least_ten_tasks_ship():
    assert len(task_ids()) >= 10


@pytest.mark.parametrize("task_id", task_ids())
def test_reference_solution_is_verified(terminal, task_id):
    env = terminal(task_id=task_id)
    obs, info = env.reset()
    assert info["task_id"] == task_id and "\\boxed{submit}" in obs
    obs, reward, terminated, *_ = env.step(env.reference_action())
    assert reward == 0.0 and not terminated
    obs, reward, terminated, truncated, info = env.step("\\boxed{submit}")
    assert (reward, terminated, truncated) == (1.0, True, False), info["verifier_output"]


def test_doing_nothing_fails(terminal):
    env = terminal()
    for seed in range(3):
        env.reset(seed=seed)
        assert env.step("submit")[1] == 0.0


def test_tampering_outside_workdir_does_not_fool_the_verifier(terminal):
    env = terminal(task_id="fix-json-config")
    env.reset()
    # Everything a verifier might run, replaced by `exit 0`; the config itself left wrong.
    env.step("for b in /usr/bin/python3 /usr/bin/python3.11 /bin/grep /usr/bin/timeout; do "
             "printf '#!/bin/sh\\nexit 0\\n' > $b; done; echo 'exit 0' >> /root/.bashrc")
    obs, reward, *_ = env.step("\\boxed{submit}")
    assert reward == 0.0


def test_step_limit_truncates_and_still_verifies(terminal, tmp_path):
    task = load_tasks()[0].model_copy(update={"max_steps": 2})
    env = terminal(tasks=[task])
    env.reset()
    env.step("true")
    *_, terminated, truncated, info = env.step("true")
    assert truncated and not terminated and info["verified"] is False


def test_commands_that_hang_are_interrupted(terminal):
    task = load_tasks()[0].model_copy(update={"command_timeout_s": 0.5})
    env = terminal(tasks=[task])
    env.reset()
    obs, *_ = env.step("sleep 30")
    assert "interrupted after 0.5 s" in obs


def test_user_task_files(tmp_path):
    good = {"id": "t1", "instruction": "make a.txt", "verify": "test -f a.txt"}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "id": "t2"}) + "\n")
    assert [t.id for t in load_tasks(path)] == ["t1", "t2"]
    path.write_text(json.dumps(good) + "\n" + json.dumps({"id": "t3", "verify": "true", "colour": 1}))
    with pytest.raises(InvalidRequest, match="mine.jsonl:2: instruction: Field required; colour"):
        load_tasks(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good))
    with pytest.raises(InvalidRequest, match="more than once: t1"):
        load_tasks(path)
    with pytest.raises(NotFound):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(NotFound, match="no task 'nope'"):
        envs.make("Terminal-v0", task_id="nope")


def test_user_task_file_runs_through_make(runtime, tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps([{"id": "touch", "instruction": "create a.txt in the workdir",
                                 "verify": "test -f /root/task/a.txt", "solution": "touch a.txt"}]))
    env = envs.make("Terminal-v0", tasks=str(path), runtime=runtime)
    try:
        env.reset(seed=0)
        env.step("touch a.txt")
        assert env.step("\\boxed{submit}")[1] == 1.0
    finally:
        env.close()
