"""SWE-style rows: the shipped tinytext rows load, the oracle resolves them, nothing does not,
and what an agent plants in the repository or the system cannot make the tests pass."""
from __future__ import annotations

import json
import shutil

import pytest

from tumbler.errors import InvalidRequest
from tumbler.tasks.agents import AgentOutcome, NopAgent, OracleAgent
from tumbler.tasks.loader import SETS, load_tasks
from tumbler.tasks.runner import RESULTS, run_tasks
from tumbler.tasks.trial import run_trial

ROWS = SETS / "swe-mini" / "instances.jsonl"


def rows() -> list[dict]:
    return [json.loads(line) for line in ROWS.read_text().splitlines()]


def write_rows(tmp_path, items: list[dict]):
    """A copy of the set with these rows (the bundle beside them, as the set has it)."""
    shutil.copytree(SETS / "swe-mini" / "repos", tmp_path / "repos", dirs_exist_ok=True)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in items))
    return path


def test_the_shipped_rows_load_as_tasks():
    tasks = load_tasks("swe-mini")
    assert [t.id for t in tasks] == ["tinytext-1", "tinytext-2"]
    t = tasks[0]
    assert (t.format, t.reward_kind, t.workdir, t.has_oracle) == ("swebench", "tests", "/testbed", True)
    assert "slugify" in t.instruction and "/testbed" in t.instruction
    assert t.fail_to_pass == ["tests/test_slug.py::test_punctuation_makes_one_dash",
                              "tests/test_slug.py::test_no_dash_at_the_ends"]
    names = {name for _, name in t.tests}
    assert {"swe_check.py", "manifest.json", "files/tests/test_slug.py",
            "files/tests/conftest.py"} <= names
    # the verifier's copy of the test file has the test patch's tests; the image's does not
    after = dict((name, p) for p, name in t.tests)["files/tests/test_slug.py"].read_text()
    assert "test_no_dash_at_the_ends" in after
    assert "test_no_dash_at_the_ends" not in (t.context / "repo" / "tests" / "test_slug.py").read_text()
    assert "COPY repo/ /testbed/" in t.dockerfile.read_text()


def test_swe_bench_json_strings_and_a_plain_repository(tmp_path):
    """FAIL_TO_PASS as SWE-bench's files write it (a JSON string), the repo a git folder."""
    import subprocess
    subprocess.run(["git", "clone", "-q", str(SETS / "swe-mini" / "repos" / "tumbler__tinytext.bundle"),
                    str(tmp_path / "checkout")], check=True)
    row = {**rows()[1], "repo_path": "checkout"}
    row["FAIL_TO_PASS"] = json.dumps(row["FAIL_TO_PASS"])
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    [task] = load_tasks(path)
    assert task.id == "tinytext-2" and len(task.fail_to_pass) == 3
    # an interpreter outside /usr: the verifier takes its whole prefix from the image
    path.write_text(json.dumps({**row, "environment": {"python": "/opt/venv/bin/python"}}) + "\n")
    [task] = load_tasks(path)
    assert task.test_command[0] == "/opt/venv/bin/python" and task.protected == ["/opt/venv"]


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("base_commit"), r"rows.jsonl:1: base_commit: Field required"),
    (lambda r: r.update(FAIL_TO_PASS="not json"), r"rows.jsonl:1: FAIL_TO_PASS: Value error, must be a list"),
    (lambda r: r.update(FAIL_TO_PASS=[]), r"rows.jsonl:1: FAIL_TO_PASS: List should have at least 1"),
    (lambda r: r.update(repo="someone/else"), r"rows.jsonl:1: repo someone/else: no local copy"),
    (lambda r: r.update(base_commit="0" * 40), r"rows.jsonl:1: base_commit 0{40} is not a commit"),
    (lambda r: r.update(test_patch=r["test_patch"].replace("test_accents", "test_nothing")),
     r"rows.jsonl:1: test_patch does not apply at base_commit"),
    (lambda r: r.update(PASS_TO_PASS=["tests/test_gone.py::test_x"]),
     r"name test files that are not in the repository.*tests/test_gone.py"),
    (lambda r: r.update(environment={"bogus": 1}), r"rows.jsonl:1: environment.bogus: Extra inputs"),
])
def test_a_broken_row_names_the_line_and_field(tmp_path, change, message):
    row = rows()[0]
    change(row)
    with pytest.raises(InvalidRequest, match=message):
        load_tasks(write_rows(tmp_path, [row]))


def test_a_row_that_is_not_json_names_its_line(tmp_path):
    path = write_rows(tmp_path, rows())
    path.write_text(path.read_text() + "{oops\n")
    with pytest.raises(InvalidRequest, match=r"rows.jsonl:3: not JSON"):
        load_tasks(path)


# -- trials -------------------------------------------------------------------------------

def test_the_oracle_resolves_and_nothing_does_not(tmp_path, runtime):
    tasks = load_tasks("swe-mini")
    solved = run_tasks(tasks, OracleAgent(), out_dir=tmp_path / "oracle", runtime=runtime,
                       concurrency=2)
    for r in solved:
        log = (tmp_path / "oracle" / "trials" / r.task_id / "0" / "verifier.log").read_text()
        assert r.passed and r.reward == 1.0 and r.error is None, (r, log)
        assert r.rewards["fail_to_pass_passed"] == r.rewards["fail_to_pass"] > 0
    [idle] = run_tasks(tasks[1:], NopAgent(), out_dir=tmp_path / "nop", runtime=runtime)
    assert (idle.passed, idle.reward, idle.error) == (False, 0.0, None), idle
    # the bug is there: the new tests fail, the old ones still pass
    assert idle.rewards == {"fail_to_pass_passed": 0.0, "fail_to_pass": 3.0,
                            "pass_to_pass_passed": 4.0, "pass_to_pass": 4.0, "reward": 0.0}
    log = (tmp_path / "nop" / "trials" / "tinytext-2" / "0" / "verifier.log").read_text()
    assert "FAIL_TO_PASS tests/test_duration.py::test_hours_and_minutes: failed" in log


def test_an_image_without_pytest_is_a_verifier_error(tmp_path, runtime):
    row = {**rows()[0], "environment": {"packages": ["git"]}}
    [task] = load_tasks(write_rows(tmp_path, [row]))
    [result] = run_tasks([task], OracleAgent(), out_dir=tmp_path / "out", runtime=runtime)
    assert (result.passed, result.error) == (False, "verifier_error"), result
    assert "pytest did not start" in result.reason


class Planter:
    """Does not fix the bug; plants everything that could make pytest say the tests passed, and
    checks that a naive `python3 -m pytest` in the repository is fooled by it."""

    name = "planter"
    script = r"""
set -e
cd /testbed
force='
import pytest
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
'
echo "$force" > conftest.py                         # a new conftest at the root
echo "$force" >> tests/conftest.py                  # and in the base's own conftest
echo "$force" > evilplugin.py
printf '[pytest]\naddopts = -p evilplugin\n' > pytest.ini
printf '[tool:pytest]\naddopts = -p evilplugin\n' > setup.cfg
# sitecustomize in the repository and in the system's site-packages, a fake pytest module
printf 'import os\nos.environ["PLANTED"] = "1"\n' > sitecustomize.py
cp sitecustomize.py /usr/lib/python3/dist-packages/sitecustomize.py
printf 'import sys\nprint("PASSED everything")\nsys.exit(0)\n' > pytest.py
# a fake pytest and python3 on PATH
printf '#!/bin/sh\necho "8 passed"\nexit 0\n' > /usr/local/bin/pytest
chmod +x /usr/local/bin/pytest
# the tests themselves, weakened
sed -i 's/assert /assert True or /' tests/test_slug.py tests/test_duration.py
mkdir -p /logs/verifier
echo '{"started": true, "exit_code": 0, "tests": {}}' > /logs/verifier/results.json
# a naive run is fooled: a test that fails is reported as passed
rm pytest.py          # (it would stop the naive run from running pytest at all)
echo 'def test_probe(): assert False' > tests/test_probe.py
python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tail -1
rm tests/test_probe.py
printf 'import sys\nprint("PASSED everything")\nsys.exit(0)\n' > pytest.py
"""

    def run(self, sandbox, task, timeout_s, log):
        result = sandbox.exec(["/bin/bash", "-c", self.script], timeout=120)
        log.write(result.stdout + result.stderr)
        assert result.exit_code == 0, result.stdout + result.stderr
        assert "7 passed" in result.stdout and "failed" not in result.stdout, result.stdout
        return AgentOutcome(result.exit_code)


def test_the_verifier_trusts_nothing_the_agent_planted(tmp_path, runtime):
    [task] = load_tasks("swe-mini", ["tinytext-1"])
    result = run_trial(task, Planter(), 0, tmp_path / "trial", runtime)
    log = (tmp_path / "trial" / "verifier.log").read_text()
    assert (result.passed, result.reward, result.error) == (False, 0.0, None), (result, log)
    assert result.rewards["fail_to_pass_passed"] == 0.0, log
    assert result.rewards["pass_to_pass_passed"] == result.rewards["pass_to_pass"], log


def test_an_agents_real_fix_is_what_is_judged(tmp_path, runtime):
    """A fix by hand (not the gold patch), with a stray edit to a test file that is put back."""

    class Fixer:
        name = "fixer"

        def run(self, sandbox, task, timeout_s, log):
            r = sandbox.exec(["/bin/sh", "-c", "sed -i 's/total = int/total += int/' "
                              "tinytext/duration.py && echo 'def test_mine(): pass' >> "
                              "tests/test_duration.py && touch tests/helpers.py"], timeout=60)
            return AgentOutcome(r.exit_code)
    [task] = load_tasks("swe-mini", ["tinytext-2"])
    result = run_trial(task, Fixer(), 0, tmp_path / "trial", runtime)
    assert result.passed, (result, (tmp_path / "trial" / "verifier.log").read_text())
    log = (tmp_path / "trial" / "verifier.log").read_text()
    assert "test_mine" not in log and "deleted 1 the base did not have: tests/helpers.py" in log


def test_the_cli_runs_rows_with_the_oracle(tmp_path, runtime):
    from typer.testing import CliRunner
    from tumbler.cli import app
    path = write_rows(tmp_path, rows())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tasks", "run", str(path), "--oracle", "-c", "2",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "tinytext-1" in result.output and "100%" in result.output
    lines = [json.loads(x) for x in (out / RESULTS).read_text().splitlines()]
    assert sorted((r["task_id"], r["passed"]) for r in lines) == [("tinytext-1", True),
                                                                  ("tinytext-2", True)]


def test_rows_are_an_env(runtime):
    from tumbler import envs
    env = envs.make("Tasks-v0", tasks="swe-mini", task_id="tinytext-2", runtime=runtime,
                    max_steps=5)
    try:
        obs, info = env.reset(seed=0)
        assert "parse_duration" in obs and "/testbed" in obs
        obs, *_ = env.step("```bash\ngit status --short && grep -n 'total =' tinytext/duration.py\n```")
        assert "total = int(number)" in obs
        env.step("sed -i 's/total = int/total += int/' tinytext/duration.py")
        obs, reward, term, trunc, info = env.step("\\boxed{submit}")
        assert (reward, term, info["verified"]) == (1.0, True, True), info
    finally:
        env.close()
