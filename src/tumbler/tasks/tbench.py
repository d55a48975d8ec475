"""Terminal-Bench 1 task folders.

    task/
      task.yaml        instruction, max_agent_timeout_sec, max_test_timeout_sec, parser_name (pytest)
      Dockerfile       the image (the task folder is the build context)
      run-tests.sh     the verifier: run as `bash /tests/run-tests.sh` with TEST_DIR=/tests
      tests/           copied to /tests beside run-tests.sh (test_outputs.py...)
      solution.sh      the oracle (or solution.yaml: a list of {command: ...}; one that types
                       keystrokes into tmux, C-x or text without Enter, leaves the task no oracle)

The reward comes from pytest's summary (`-rA` lines "PASSED x" / "FAILED x"): 1.0 when at least
one test ran and every one passed.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tumbler.errors import InvalidRequest
from tumbler.tasks.harbor import field_errors, files_under
from tumbler.tasks.model import Task


KEYSTROKE = re.compile(r"^[CM]-\S$")


class _TaskYaml(BaseModel):
    model_config = ConfigDict(extra="allow")

    instruction: str = Field(min_length=1)
    max_agent_timeout_sec: float = Field(360.0, gt=0)
    max_test_timeout_sec: float = Field(60.0, gt=0)
    parser_name: str = "pytest"


def is_tbench(path: Path) -> bool:
    return (path / "task.yaml").is_file()


def load_tbench(path: Path) -> Task:
    """The Terminal-Bench 1 task in folder `path`; InvalidRequest names the file and field."""
    config = _config(path / "task.yaml")
    if config.parser_name != "pytest":
        raise InvalidRequest(f"{path / 'task.yaml'}: parser_name {config.parser_name!r}: only "
                             "pytest is supported")
    for name in ("Dockerfile", "run-tests.sh"):
        if not (path / name).is_file():
            raise InvalidRequest(f"task {path.name}: missing file {path / name}")
    tests = [(path / "run-tests.sh", "run-tests.sh"), *files_under(path / "tests")]
    solution, command = _solution(path)
    return Task(
        id=path.name, path=path, format="tbench1", instruction=config.instruction.strip(),
        context=path, dockerfile=path / "Dockerfile", tests=tests,
        test_command=["bash", "/tests/run-tests.sh"], reward_kind="pytest",
        solution=solution, solution_command=command,
        agent_timeout_s=config.max_agent_timeout_sec,
        verifier_timeout_s=config.max_test_timeout_sec, verifier_env={"TEST_DIR": "/tests"},
        metadata={k: v for k, v in (config.model_extra or {}).items()
                  if isinstance(v, (str, int, float, list))})


def _config(path: Path) -> _TaskYaml:
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: must be a mapping with an 'instruction' field")
    if "descriptions" in data and "instruction" not in data:   # the older layout
        first = (data["descriptions"] or [{}])[0]
        data = {**data, "instruction": first.get("description", "")}
    try:
        return _TaskYaml.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"{path}: {field_errors(exc)}") from None


def _solution(path: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    if (path / "solution.sh").is_file():
        return [(path / "solution.sh", "solution.sh")], ["bash", "/solution/solution.sh"]
    if (path / "solution.yaml").is_file():
        script = _solution_script(path / "solution.yaml")
        if script is None:   # keystrokes for tmux: no oracle here, the task still runs
            return [], []
        return [(_written(script), "solution.sh")], ["bash", "/solution/solution.sh"]
    return [], []


def _solution_script(path: Path) -> str | None:
    """solution.yaml's commands as a script; None when it types keystrokes into tmux (C-x,
    text without Enter), which only a terminal replay can do."""
    try:
        steps = yaml.safe_load(path.read_text()) or []
        commands = [(str(s["command"]), s.get("append_enter", True)) for s in steps]
    except (yaml.YAMLError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidRequest(f"{path}: each item needs a 'command' ({exc})") from None
    if any(not enter or KEYSTROKE.match(cmd) for cmd, enter in commands):
        return None
    return "set -e\n" + "\n".join(cmd for cmd, _ in commands) + "\n"


def _written(script: str) -> Path:
    """The script in a file of its own (named by its hash), outside the task's folder."""
    folder = Path(tempfile.gettempdir()) / "tumbler-solutions"
    folder.mkdir(exist_ok=True)
    path = folder / (hashlib.sha256(script.encode()).hexdigest()[:24] + ".sh")
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(script)
        tmp.replace(path)
    return path
