"""The shipped scenario sets: every task passes its oracle and fails when the agent does nothing.

The default run takes a few DevOps and customer-service tasks; `-m slow` takes all of them (the
data-analysis image installs matplotlib from Debian's archive on its first build, ~2-3 min).
"""
from __future__ import annotations

import pytest

from tumbler.tasks.agents import NopAgent, OracleAgent
from tumbler.tasks.loader import load_tasks, shipped_sets
from tumbler.tasks.runner import run_tasks

QUICK = {("devops", "broken-service"), ("devops", "wrong-permission"), ("devops", "crashed-cron"),
         ("support", "refund-damaged-order"), ("support", "address-change-shipped")}


def cases():
    for name in shipped_sets():
        for task in load_tasks(name):
            marks = () if (name, task.id) in QUICK else (pytest.mark.slow,)
            yield pytest.param(name, task.id, marks=marks, id=f"{name}/{task.id}")


def test_the_three_scenarios_ship_at_least_ten_tasks_each():
    sets = {name: load_tasks(name) for name in shipped_sets()}
    assert set(sets) == {"devops", "data", "support", "swe-mini"}   # swe-mini: test_swebench.py
    for name, tasks in sets.items():
        if name == "swe-mini":
            continue
        assert len(tasks) >= 10, name
        for t in tasks:
            assert t.format == "harbor" and t.has_oracle and t.instruction, t.id


@pytest.mark.parametrize("set_name, task_id", list(cases()))
def test_oracle_passes_and_doing_nothing_fails(set_name, task_id, runtime, tmp_path):
    [task] = load_tasks(set_name, [task_id])
    [solved] = run_tasks([task], OracleAgent(), out_dir=tmp_path / "oracle", runtime=runtime)
    assert solved.passed and solved.reward == 1.0, (solved.error, solved.reason,
                                                    (tmp_path / "oracle" / "trials" / task_id / "0" / "verifier.log").read_text())
    [idle] = run_tasks([task], NopAgent(), out_dir=tmp_path / "nop", runtime=runtime)
    assert not idle.passed and idle.reward == 0.0 and idle.error is None, idle


def test_the_support_verifier_catches_a_change_nobody_asked_for(runtime, tmp_path):
    """The oracle plus one extra write to another customer: the ticket is done, the task is not."""
    [task] = load_tasks("support", ["refund-damaged-order"])

    class Overeager(OracleAgent):
        name = "overeager"

        def run(self, sandbox, task, timeout_s, log):
            outcome = super().run(sandbox, task, timeout_s, log)
            sandbox.exec(["support", "customer", "update", "2", "--phone", "+1-555-9999"], timeout=30)
            return outcome
    [result] = run_tasks([task], Overeager(), out_dir=tmp_path, runtime=runtime)
    assert not result.passed and result.error is None
    assert "customers 2: phone changed" in (tmp_path / "trials" / task.id / "0" / "verifier.log").read_text()


def test_a_task_set_is_an_env(runtime):
    from tumbler import envs
    env = envs.make("Tasks-v0", tasks="devops", task_id="stale-lock", runtime=runtime, max_steps=5)
    try:
        obs, info = env.reset(seed=0)
        assert "queue worker" in obs and info["task_id"] == "stale-lock"
        obs, reward, term, trunc, _ = env.step("```bash\ncat /var/lib/queue/worker.lock\n```")
        assert "31337" in obs and (reward, term, trunc) == (0.0, False, False)
        env.step("rm /var/lib/queue/worker.lock")
        obs, reward, term, trunc, info = env.step("\\boxed{submit}")
        assert (reward, term, trunc, info["verified"]) == (1.0, True, False, True), info
        env.reset()
        for _ in range(5):
            obs, reward, term, trunc, info = env.step("true")
        assert (reward, term, trunc, info["verified"]) == (0.0, False, True, False)
    finally:
        env.close()
