"""Agent programs: every shipped config's contract, and the contract run for real on a shipped
task (devops/wrong-permission) with a scripted owner, by a stdlib program with no install."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tumbler.agents import ProgramAgent, ScriptedOwner, load_program, shipped_programs
from tumbler.agents.program import PROGRAMS, AgentProgram
from tumbler.errors import InvalidRequest, NotFound
from tumbler.runtime.dockerfiles import parse_dockerfile
from tumbler.tasks.agents import load_agent
from tumbler.tasks.loader import load_tasks
from tumbler.tasks.runner import run_tasks

from agentloops import STDLIB_AGENT

SHIPPED = ["bash", "claude-code", "mini-swe-agent", "qwen-code"]

FIX = "chmod 755 /opt/report/bin/make-report && chown app:app /srv/reports"
TABLE = [{"when": "report job", "shell": FIX}, {"when": "exit code: 0", "text": "Fixed."}]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_program_keeps_the_contract(name):
    program = load_program(name)
    assert name in shipped_programs() and program.name == name
    hostile = "it's \"$(rm -rf /)\" `x` {model}\n; exit 1"
    line = program.render(hostile, "/work dir")
    if "{prompt}" in program.command:   # the prompt reaches the program as one word, intact
        assert shlex.quote(hostile) in line
    assert "{prompt" not in line and "{model}" not in line.replace(shlex.quote(hostile), "")
    subprocess.run(["sh", "-n", "-c", line], check=True)   # the line parses as shell
    steps = parse_dockerfile_text(program.dockerfile("task-image"))
    assert steps[0].op == "FROM" and steps[0].args == "task-image"
    for step in steps[1:]:
        assert step.op in ("RUN", "COPY", "ENV", "WORKDIR", "ARG")
        if step.op == "COPY":   # what it copies ships beside the config
            assert (PROGRAMS / step.args.split()[0]).is_file()
    assert all(path.startswith("/") for path in program.collect)
    # The endpoint the program calls is the one its API names; the other is set too, unused.
    assert program.api == ("anthropic" if name == "claude-code" else "openai")
    assert "OPENAI_BASE_URL" not in program.env and "ANTHROPIC_BASE_URL" not in program.env


def parse_dockerfile_text(text, tmp=None):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "Dockerfile").write_text(text)
        return parse_dockerfile(Path(d) / "Dockerfile")


def test_bad_programs_say_what_to_fix(tmp_path):
    with pytest.raises(NotFound, match="shipped: bash"):
        load_program("nope")
    bad = tmp_path / "x.toml"
    bad.write_text('name = "x"\ncommand = "run it"\ntimeout_s = -1\n')
    with pytest.raises(InvalidRequest, match=r"x.toml: command: .*\{prompt\}.*timeout_s"):
        load_program(bad)
    bad.write_text('name = "x"\ncommand = "run {prompt}"\nshell = 1\n')
    with pytest.raises(InvalidRequest, match="shell: Extra inputs"):
        load_program(bad)
    with pytest.raises(InvalidRequest, match="--model-url"):
        load_agent("claude-code")
    with pytest.raises(InvalidRequest, match="bad scripted-owner table"):
        ScriptedOwner([{"when": "("}])


def stdlib_program(**extra) -> AgentProgram:
    return AgentProgram(name="stdlib-bash", command='python3 -c "$AGENT_CODE" {prompt_file} {model}',
                        env={"AGENT_CODE": STDLIB_AGENT, "AGENT_MODE": "test"},
                        collect=["/logs/agent/mine.json", "/logs/agent/absent.json"], **extra)


def test_program_solves_a_shipped_task_with_a_scripted_owner(tmp_path):
    [task] = load_tasks("devops", ["wrong-permission"])
    owner = ScriptedOwner(TABLE)
    [result] = run_tasks([task], ProgramAgent(stdlib_program(), owner), out_dir=tmp_path)
    assert result.passed and result.reward == 1.0 and result.error is None, result
    trial = tmp_path / "trials" / task.id / "0"
    log = (trial / "agent.log").read_text()
    assert "cwd /root mode test" in log and "exit code 0" in log
    [line] = (trial / "trajectory.jsonl").read_text().splitlines()
    exchanges = json.loads(line)["exchanges"]
    assert len(exchanges) == 2 and all(x["status"] == 200 and x["api"] == "openai" for x in exchanges)
    assert task.instruction in exchanges[0]["request"]["messages"][0]["content"]
    assert exchanges[0]["request"]["model"] == "policy"
    tool_result = exchanges[1]["request"]["messages"][-1]
    assert tool_result["role"] == "tool" and tool_result["content"].startswith("exit code: 0")
    mine = json.loads((trial / "files" / "mine.json").read_text())
    assert mine[-1]["content"] == "Fixed." and not (trial / "files" / "absent.json").exists()
    assert [i for _, i in owner.answered] == [0, 1]


def test_program_that_hangs_is_killed_at_its_timeout(tmp_path):
    [task] = load_tasks("devops", ["wrong-permission"])
    program = AgentProgram(name="sleeper", command="cat {prompt_file}; sleep 600", timeout_s=2)
    [result] = run_tasks([task], ProgramAgent(program, ScriptedOwner([])), out_dir=tmp_path)
    assert result.error == "agent_timeout" and not result.passed
    assert "report job" in (tmp_path / "trials" / task.id / "0" / "agent.log").read_text()
