"""Terminal tasks as data: one JSON object per task, in a .jsonl file (one per line) or a .json
file (one object or a list). Users bring their own task sets this way, without code.

    {"id": "fix-add", "instruction": "...", "setup": "bash ...", "verify": "bash ...",
     "solution": "bash ...", "image": "debian", "workdir": "/root/task",
     "command_timeout_s": 30, "verify_timeout_s": 60, "max_steps": 20}
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tumbler.errors import InvalidRequest, NotFound

BUILTIN_TASKS = Path(__file__).parent / "tasks" / "terminal.jsonl"


class TerminalTask(BaseModel):
    """One terminal task: a sandbox image, a setup, an instruction for the agent, and a verifier."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    """Unique name of the task in its set."""
    instruction: str = Field(min_length=1)
    """What the agent is asked to do (its first observation)."""
    verify: str = Field(min_length=1)
    """Bash script; exit status 0 means solved. It runs after the episode in a fresh sandbox of
    `image` into which only `workdir` is copied from the agent's sandbox, with cwd = workdir."""
    setup: str = ""
    """Bash script run in the agent's sandbox before the episode (cwd = workdir)."""
    solution: str = ""
    """Bash script that solves the task (the reference; tests run it)."""
    image: str = "debian"
    """The image both the agent's sandbox and the verifier's start from."""
    workdir: str = "/root/task"
    """The directory the agent works in; the only thing the verifier receives from it."""
    command_timeout_s: float = Field(30.0, gt=0, le=3600)
    """Seconds one agent command may run before it is interrupted."""
    verify_timeout_s: float = Field(60.0, gt=0, le=3600)
    """Seconds the verifier may run; a verifier that runs longer fails the task."""
    max_steps: int = Field(20, ge=1, le=1000)
    """Commands the agent may run in one episode."""

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") in ("", "/"):
            raise ValueError("workdir must be an absolute path below /")
        return value.rstrip("/")


def load_tasks(path: str | Path = BUILTIN_TASKS) -> list[TerminalTask]:
    """Tasks from a .jsonl or .json file; InvalidRequest names the line (or file) at fault."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"no task file at {path}")
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = [(f"{path}:{n}", line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        tasks = [_task(where, _json(where, line)) for where, line in rows]
    else:
        data = _json(str(path), text)
        tasks = [_task(f"{path}[{i}]", d) for i, d in enumerate(data if isinstance(data, list) else [data])]
    ids = [t.id for t in tasks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidRequest(f"{path}: task ids used more than once: {', '.join(duplicates)}")
    if not tasks:
        raise InvalidRequest(f"{path} holds no tasks")
    return tasks


def _json(where: str, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{where}: not JSON: {exc}") from None


def _task(where: str, data) -> TerminalTask:
    try:
        return TerminalTask.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'task'}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"{where}: {problems}") from None
