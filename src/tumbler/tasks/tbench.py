"""Terminal-Bench 1 task folders.

    task/
      task.yaml        instruction, max_agent_timeout_sec, max_test_timeout_sec, parser_name (pytest)
      Dockerfile       the image (the task folder is the build context)
      run-tests.sh     the verifier: run as `bash /tests/run-tests.sh` with TEST_DIR=/tests
      tests/           copied to /tests beside run-tests.sh (test_outputs.py...)
      solution.sh      the oracle (or solution.yaml: a list of {command: ...})

The reward comes from pytest's summary (`-rA` lines "PASSED x" / "FAILED x"): 1.0 when at least
one test ran and every one passed.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tumbler.errors import InvalidRequest
from tumbler.tasks.harbor import field_errors, files_under
from tumbler.tasks.model import Task


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
        try:
            steps = yaml.safe_load((path / "solution.yaml").read_text()) or []
            script = "set -e\n" + "\n".join(str(s["command"]) for s in steps) + "\n"
        except (yaml.YAMLError, TypeError, KeyError) as exc:
            raise InvalidRequest(f"{path / 'solution.yaml'}: each item needs a 'command' ({exc})") from None
        generated = path / ".solution-from-yaml.sh"
        return [(_write_once(generated, script), "solution.sh")], ["bash", "/solution/solution.sh"]
    return [], []


def _write_once(path: Path, text: str) -> Path:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path
