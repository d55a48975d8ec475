"""The shipped agent programs, installed from PyPI/npm into a shipped task's image at build time,
solve it in a sandbox with the network off, answered by a scripted owner (no LLM). Slow: the
first run builds each image (minutes; cached by step after)."""
from __future__ import annotations

import json

import pytest

from tumbler.agents import ProgramAgent, ScriptedOwner, load_program
from tumbler.tasks.loader import load_tasks
from tumbler.tasks.runner import run_tasks

FIX = "chmod 755 /opt/report/bin/make-report && chown app:app /srv/reports"
SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"   # mini-swe-agent's way to finish
# One table serves every program: the fix for whichever shell tool the call offers, the
# submit line, then a plain answer; side calls without tools (titles, checks) get the fallback.
TABLE = [{"when": "report job", "tools": True, "shell": FIX},
         {"tools": True, "shell": SUBMIT},
         {"tools": True, "text": "Fixed: the job runs as app."}]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bash", "mini-swe-agent", "qwen-code", "claude-code"])
def test_program_solves_a_shipped_task(name, tmp_path):
    [task] = load_tasks("devops", ["wrong-permission"])
    program = load_program(name)
    owner = ScriptedOwner(TABLE, fallback="OK")
    [result] = run_tasks([task], ProgramAgent(program, owner), out_dir=tmp_path)
    trial = tmp_path / "trials" / task.id / "0"
    log = (trial / "agent.log").read_text() if (trial / "agent.log").exists() else ""
    assert result.passed and result.reward == 1.0, (result, owner.answered, log[-3000:],
                                                    (trial / "verifier.log").read_text()[-2000:])
    [line] = (trial / "trajectory.jsonl").read_text().splitlines()
    episode = json.loads(line)
    assert episode["exit_code"] == 0 and episode["reason"] == "exited"
    calls = [x for x in episode["exchanges"] if x["request"].get("tools")]
    assert calls and all(x["status"] == 200 and x["api"] == program.api for x in calls)
    assert any(task.instruction.splitlines()[0] in json.dumps(x["request"]) for x in calls)
    used = {i for _, i in owner.answered}
    assert 0 in used   # the fix was asked for and run: the verifier saw its effect
    for path in program.collect:
        name_ = path.rsplit("/", 1)[-1]
        assert (trial / "files" / name_).stat().st_size > 0
