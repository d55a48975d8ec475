"""Task folders (Harbor, Terminal-Bench 1), trials, the verifier against a planting agent, the runner."""
from __future__ import annotations

import json

import pytest

from taskdirs import harbor_task, write
from tumbler.errors import InvalidRequest
from tumbler.tasks.agents import AgentOutcome, NopAgent, OracleAgent
from tumbler.tasks.loader import load_task, load_tasks
from tumbler.tasks.report import pass_at_k, summarize
from tumbler.tasks.runner import RESULTS, run_tasks
from tumbler.tasks.trial import run_trial
from tumbler.tasks.verify import parse_reward


def trial(task_dir, agent, tmp_path, runtime):
    return run_trial(load_task(task_dir), agent, 0, tmp_path / "trial", runtime)


# -- loading ------------------------------------------------------------------------------

def test_a_harbor_folder_loads(tmp_path):
    d = harbor_task(tmp_path, agent_timeout=12)
    with open(d / "task.toml", "a") as fh:   # fields of Terminal-Bench 2's task.toml files
        fh.write('workdir = "/srv/work"\nallow_internet = false\nbuild_timeout_sec = 900.0\n')
    task = load_task(d)
    assert task.workdir == "/srv/work" and task.metadata["allow_internet"] is False
    assert (task.format, task.id, task.agent_timeout_s, task.memory) == ("harbor", "answer", 12, "512m")
    assert task.instruction == "Write 42 to /root/answer.txt."
    assert [name for _, name in task.tests] == ["test.sh"] and task.has_oracle


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "instruction.md").unlink(), "missing file .*instruction.md"),
    (lambda d: (d / "tests" / "test.sh").unlink(), "missing file .*tests/test.sh"),
    (lambda d: (d / "environment" / "Dockerfile").unlink(), "missing file .*Dockerfile"),
    (lambda d: (d / "instruction.md").write_text("  \n"), "instruction.md is empty"),
    (lambda d: (d / "task.toml").write_text("[agent\n"), "task.toml: not TOML"),
    (lambda d: (d / "task.toml").write_text("[agent]\ntimeout_sec = 'soon'\n"),
     "task.toml: agent.timeout_sec: Input should be a valid number"),
    (lambda d: (d / "task.toml").write_text("[environment]\nmemory_mb = -1\n"),
     "task.toml: environment.memory_mb"),
])
def test_a_broken_harbor_folder_names_the_file_and_field(tmp_path, breakage, message):
    d = harbor_task(tmp_path)
    breakage(d)
    with pytest.raises(InvalidRequest, match=message):
        load_task(d)


def test_a_folder_that_is_no_task_says_so(tmp_path):
    with pytest.raises(InvalidRequest, match="neither task.toml"):
        load_task(tmp_path)
    with pytest.raises(InvalidRequest, match="holds no task folders"):
        load_tasks(tmp_path)


def tbench_task(root, name="tb-answer", *, solution="echo 42 > /root/answer.txt\n"):
    d = root / name
    write(d / "task.yaml", """
    instruction: |
      Write 42 to /root/answer.txt.
    difficulty: easy
    parser_name: pytest
    max_agent_timeout_sec: 60
    max_test_timeout_sec: 60
    """)
    write(d / "Dockerfile", """
    FROM debian:bookworm
    RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-pytest && rm -rf /var/lib/apt/lists/*
    WORKDIR /root
    """)
    write(d / "run-tests.sh", "#!/bin/bash\ncd $TEST_DIR && python3 -m pytest -rA test_outputs.py\n")
    write(d / "tests" / "test_outputs.py", """
    def test_answer():
        assert open("/root/answer.txt").read().strip() == "42"

    def test_file_is_small():
        import os
        assert os.path.getsize("/root/answer.txt") < 10
    """)
    write(d / "solution.sh", solution)
    return d


def test_a_terminal_bench_task_runs_with_pytest_parsing(tmp_path, runtime):
    d = tbench_task(tmp_path)
    task = load_task(d)
    assert (task.format, task.reward_kind, task.verifier_env) == ("tbench1", "pytest", {"TEST_DIR": "/tests"})
    solved = trial(d, OracleAgent(), tmp_path, runtime)
    assert solved.passed and solved.rewards == {"tests_passed": 2.0, "tests": 2.0}, solved
    nothing = trial(d, NopAgent(), tmp_path, runtime)
    assert not nothing.passed and nothing.error is None and nothing.rewards["tests_passed"] == 0


def test_a_broken_task_yaml_names_the_field(tmp_path):
    d = tbench_task(tmp_path)
    (d / "task.yaml").write_text("instruction: ''\n")
    with pytest.raises(InvalidRequest, match="task.yaml: instruction"):
        load_task(d)


# -- trials and the verifier -------------------------------------------------------------

def test_oracle_passes_and_nothing_fails(tmp_path, runtime):
    d = harbor_task(tmp_path)
    good = trial(d, OracleAgent(), tmp_path, runtime)
    assert (good.passed, good.reward, good.error) == (True, 1.0, None)
    bad = trial(d, NopAgent(), tmp_path, runtime)
    assert (bad.passed, bad.reward, bad.error) == (False, 0.0, None)


class Planter:
    """An agent that does not solve the task but tries every way to make the verifier say it did."""

    name = "planter"
    script = r"""
mkdir -p /logs/verifier /tests
echo 1 > /logs/verifier/reward.txt
printf '#!/bin/bash\nmkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt\n' > /tests/test.sh
chmod +x /tests/test.sh
# a python3 that says yes, ahead on PATH and in place of the real one
printf '#!/bin/sh\nmkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt; exit 0\n' > /usr/local/bin/python3
chmod +x /usr/local/bin/python3
cp /usr/local/bin/python3 /usr/bin/python3.fake && mv /usr/bin/python3.fake /usr/bin/python3
# startup files and a watcher that keeps rewriting the reward
echo 'echo 1 > /logs/verifier/reward.txt' >> /root/.bashrc
echo 'echo 1 > /logs/verifier/reward.txt' >> /etc/bash.bashrc
echo 'import os; os.makedirs("/logs/verifier", exist_ok=True); open("/logs/verifier/reward.txt", "w").write("1")' > /conftest.py
nohup sh -c 'while true; do mkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt; sleep 0.01; done' >/dev/null 2>&1 &
echo planted
"""

    def run(self, sandbox, task, timeout_s, log):
        result = sandbox.exec(["/bin/bash", "-c", self.script], timeout=60)
        log.write(result.stdout + result.stderr)
        assert "planted" in result.stdout
        return AgentOutcome(result.exit_code)


def test_the_verifier_trusts_nothing_the_agent_planted(tmp_path, runtime):
    d = harbor_task(tmp_path)
    result = trial(d, Planter(), tmp_path, runtime)
    assert (result.passed, result.reward, result.error) == (False, 0.0, None), result


def test_the_agents_data_reaches_the_verifier(tmp_path, runtime):
    """What the agent changed outside /usr (configs, deletions, new files) is what is judged."""
    d = harbor_task(tmp_path, dockerfile="FROM debian\nRUN echo old > /etc/app.conf && touch /var/stale\n",
                    solve_sh="echo new > /etc/app.conf; rm /var/stale; echo 42 > /root/answer.txt\n",
                    test_sh="""#!/bin/bash
                    mkdir -p /logs/verifier
                    [ "$(cat /etc/app.conf)" = new ] && [ ! -e /var/stale ] && [ "$(cat /root/answer.txt)" = 42 ] \\
                      && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
                    """)
    assert trial(d, OracleAgent(), tmp_path, runtime).passed


@pytest.mark.parametrize("test_sh, error", [
    ("#!/bin/bash\nexit 3\n", "exit code 3.*wrote no"),
    ("#!/bin/bash\nsleep 30\n", "verifier timed out after 2 s"),
    ("#!/bin/bash\nmkdir -p /logs/verifier; head -c 10000 /dev/zero | tr '\\0' 1 > /logs/verifier/reward.txt\n",
     "reward.txt is over 4096 bytes"),
    ("#!/bin/bash\nmkdir -p /logs/verifier; echo nan > /logs/verifier/reward.txt\n", "not a finite number"),
])
def test_a_broken_verifier_is_an_error_not_a_failed_task(tmp_path, runtime, test_sh, error):
    d = harbor_task(tmp_path, test_sh=test_sh, verifier_timeout=2)
    result = trial(d, OracleAgent(), tmp_path, runtime)
    assert result.error == "verifier_error" and not result.passed
    assert __import__("re").search(error, result.reason), result.reason


def test_reward_json_gives_named_rewards(tmp_path, runtime):
    d = harbor_task(tmp_path, test_sh="#!/bin/bash\nmkdir -p /logs/verifier\n"
                    "echo '{\"reward\": 0.5, \"style\": 1}' > /logs/verifier/reward.json\n")
    result = trial(d, OracleAgent(), tmp_path, runtime)
    assert (result.reward, result.passed, result.rewards) == (0.5, False, {"reward": 0.5, "style": 1.0})
    with pytest.raises(ValueError):
        parse_reward("reward.json", b'{"reward": "1e999"}')


def test_an_agent_that_hangs_is_killed_at_its_timeout(tmp_path, runtime):
    d = harbor_task(tmp_path, solve_sh="sleep 60\n", agent_timeout=2)
    result = trial(d, OracleAgent(), tmp_path, runtime)
    assert (result.error, result.passed) == ("agent_timeout", False)
    assert "ran past 2 s" in result.reason and result.agent_seconds < 20


def test_an_image_that_does_not_build_fails_its_trials_with_the_step(tmp_path, runtime):
    d = harbor_task(tmp_path, dockerfile="FROM debian\nRUN echo broken step; exit 9\n")
    result = run_tasks([load_task(d)], OracleAgent(), k=2, out_dir=tmp_path / "out", runtime=runtime)
    assert [r.error for r in result] == ["build_error", "build_error"]
    assert "step 1/1" in result[0].reason and "broken step" in result[0].reason


# -- the runner ----------------------------------------------------------------------------

class CountingOracle(OracleAgent):
    name = "counting"

    def __init__(self):
        self.calls = 0

    def run(self, *args):
        self.calls += 1
        return super().run(*args)


def test_a_run_resumes_without_redoing_finished_trials(tmp_path, runtime):
    tasks = [load_task(harbor_task(tmp_path, "one")), load_task(harbor_task(tmp_path, "two"))]
    out = tmp_path / "out"
    agent = CountingOracle()
    first = run_tasks(tasks, agent, k=2, concurrency=2, out_dir=out, runtime=runtime)
    assert agent.calls == 4 and all(r.passed for r in first)
    assert (out / "trials" / "one" / "1" / "agent.log").exists()
    assert (out / "trials" / "two" / "0" / "verifier.log").exists()
    # a crash: the last trial's line never got written, the one before it only half
    lines = (out / RESULTS).read_text().splitlines()
    (out / RESULTS).write_text("\n".join(lines[:2]) + "\n" + lines[2][:17])
    resumed = []
    again = CountingOracle()
    results = run_tasks(tasks, again, k=2, concurrency=2, out_dir=out, runtime=runtime,
                        on_trial=lambda r, was_resumed: resumed.append(was_resumed))
    assert again.calls == 2 and resumed.count(True) == 2
    assert sorted((r.task_id, r.trial) for r in results) == [("one", 0), ("one", 1), ("two", 0), ("two", 1)]
    assert all(json.loads(line)["passed"] for line in (out / RESULTS).read_text().splitlines()[3:])


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 5, 3) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)          # 1 - C(3,2)/C(4,2)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)


def test_the_summary_counts_errors_and_pass_at_k():
    from tumbler.tasks.trial import TrialResult

    def r(task, i, ok, error=None):
        return TrialResult(task_id=task, trial=i, agent="x", reward=float(ok), passed=ok,
                           error=error, seconds=2.0)
    s = summarize([r("a", 0, True), r("a", 1, False), r("b", 0, False, "agent_timeout"),
                   r("b", 1, False)], k=2)
    assert (s.tasks, s.trials, s.resolved_rate, s.mean_reward) == (2, 4, 0.25, 0.25)
    assert s.pass_at_k == {1: 0.25, 2: 0.5} and s.errors == {"agent_timeout": 1}


def test_the_cli_runs_a_task_and_prints_the_table(tmp_path, runtime):
    from typer.testing import CliRunner
    from tumbler.cli import app
    d = harbor_task(tmp_path, "cli-task")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tasks", "run", str(d), "--oracle", "-k", "2", "-c", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cli-task" in result.output and "100%" in result.output
    assert len((out / RESULTS).read_text().splitlines()) == 2
    bad = CliRunner().invoke(app, ["tasks", "run", str(tmp_path / "nope"), "--oracle"])
    assert bad.exit_code != 0 and "no task folder or set" in bad.output


def test_a_killed_run_resumes_where_it_was(tmp_path, runtime):
    """SIGKILL the CLI mid-run: the rerun does only the trials with no line, and no sandbox stays."""
    import os
    import signal
    import subprocess
    import sys
    import time
    d = harbor_task(tmp_path, "slowish", solve_sh="sleep 1.5; echo 42 > /root/answer.txt\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tumbler.cli", "tasks", "run", str(d), "--oracle", "-k", "6",
           "-c", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (out / RESULTS).exists() and len((out / RESULTS).read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done_before = {json.loads(line)["trial"] for line in (out / RESULTS).read_text().splitlines()}
    assert 2 <= len(done_before) < 6
    again = CountingOracle()
    results = run_tasks([load_task(d)], again, k=6, out_dir=out, runtime=runtime)
    assert again.calls == 6 - len(done_before)
    assert sorted(r.trial for r in results) == list(range(6)) and all(r.passed for r in results)
    # the killed run's sandboxes go when the runtime is next opened (their owner is dead)
    from tumbler.runtime.owners import OWNER_LABEL
    from tumbler.runtime.process import ProcessRuntime
    left = [s.id for s in ProcessRuntime().list()
            if s.spec.labels.get(OWNER_LABEL, "").startswith(f"{proc.pid}:")]
    assert left == []
    stale = [i.name for i in runtime.images.list() if i.name.startswith("verify.")
             and runtime.images.meta(i.name).get("owner", "").startswith(f"{proc.pid}:")]
    assert stale == []


def test_pruning_follows_no_link_and_survives_a_deep_tree(tmp_path):
    """The agent's layer as the host sees it: a link to the host's files and a very deep tree."""
    from tumbler.errors import RuntimeFailure
    from tumbler.tasks.verify import prune_layer
    host = tmp_path / "host-etc"
    (host / "x" / ".local").mkdir(parents=True)
    layer = tmp_path / "layer"
    (layer / "srv" / "keep").mkdir(parents=True)
    (layer / "srv" / "keep" / "data.txt").write_text("kept")
    (layer / "srv" / "lib" / "site-packages").mkdir(parents=True)
    (layer / "usr" / "bin").mkdir(parents=True)
    (layer / "home").symlink_to(host)                  # home/*/.local would reach the host's
    (layer / "srv" / "out").symlink_to(host)
    (layer / "conftest.py").write_text("planted")
    prune_layer(layer)
    assert (host / "x" / ".local").is_dir()             # the host's files are untouched
    assert (layer / "srv" / "keep" / "data.txt").read_text() == "kept"
    assert not (layer / "usr").exists() and not (layer / "conftest.py").exists()
    assert not (layer / "srv" / "lib" / "site-packages").exists()
    from tumbler.runtime.trees import remove_tree
    try:
        deep = layer / "srv"
        for _ in range(1200):                           # past Python's recursion limit
            deep = deep / "d"
        __import__("subprocess").run(["mkdir", "-p", str(deep / "site-packages")], check=True)
        prune_layer(layer)
        assert deep.is_dir() and not (deep / "site-packages").exists()
        long = layer / "srv" / "long"
        for _ in range(39):                             # 3,900 characters: past MAX_PATH
            long = long / ("x" * 99)
        long.mkdir(parents=True)
        with pytest.raises(RuntimeFailure, match="nest too deep"):
            prune_layer(layer)
    finally:   # shutil.rmtree (pytest's tmp_path cleanup) would recurse past its limit
        assert remove_tree(layer / "srv")


def test_an_agent_by_module_and_factory(tmp_path, runtime, monkeypatch):
    from tumbler.tasks.agents import load_agent
    write(tmp_path / "my_agents.py", """
    from tumbler.tasks.agents import AgentOutcome

    class Answerer:
        name = "answerer"

        def run(self, sandbox, task, timeout_s, log):
            sandbox.write_file("/root/answer.txt", "42\\n")
            return AgentOutcome(0)

    def make():
        return Answerer()
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    agent = load_agent("my_agents:make")
    assert trial(harbor_task(tmp_path), agent, tmp_path, runtime).passed
    with pytest.raises(InvalidRequest, match="no attribute 'nope'"):
        load_agent("my_agents:nope")
    with pytest.raises(InvalidRequest, match="or module:factory"):
        load_agent("claude")


def test_the_verifiers_own_virtualenv_comes_from_the_image(tmp_path, runtime):
    """Terminal-Bench 2 verifiers run /opt/verifier-venv/bin/pytest: an agent that rewrites it
    (it is not under site-packages) still gets the image's."""
    d = harbor_task(tmp_path, dockerfile="""FROM debian
    RUN mkdir -p /opt/verifier-venv/bin && touch /opt/verifier-venv/pyvenv.cfg \\
     && printf '#!/bin/sh\\nexit 1\\n' > /opt/verifier-venv/bin/pytest && chmod +x /opt/verifier-venv/bin/pytest
    """, test_sh="""#!/bin/bash
    mkdir -p /logs/verifier
    /opt/verifier-venv/bin/pytest && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
    """, solve_sh="printf '#!/bin/sh\\nexit 0\\n' > /opt/verifier-venv/bin/pytest\n")
    result = trial(d, OracleAgent(), tmp_path, runtime)
    assert (result.passed, result.error) == (False, None)


def test_terminal_bench_solution_yaml_and_bases(tmp_path, runtime):
    from tumbler.runtime.dockerfile_images import resolve_base
    d = tbench_task(tmp_path)
    (d / "solution.sh").unlink()
    write(d / "solution.yaml", """
    - command: echo 42 > /root/answer.txt
      min_timeout_sec: 0.1
      block: true
      append_enter: true
    """)
    task = load_task(d)
    assert task.has_oracle and not any(d in p.parents for p, _ in task.solution)
    write(d / "solution.yaml", "- command: vim x\n- command: C-x\n  append_enter: false\n")
    assert not load_task(d).has_oracle          # keystrokes for tmux: no oracle, still a task
    assert resolve_base(runtime.images, "ghcr.io/laude-institute/t-bench/ubuntu-24-04:20250624").image == "debian"
    assert resolve_base(runtime.images, "ghcr.io/laude-institute/t-bench/python-3-13:latest").image == "debian-pip"
