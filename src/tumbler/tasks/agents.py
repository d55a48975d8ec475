"""What acts in a trial: the task's own solution (the oracle), nothing at all, or your agent.

An agent is any object with `name` and `run(sandbox, task, timeout_s, log) -> AgentOutcome`;
`sandbox` is a LocalSandbox of the task's image (cwd the image's WORKDIR), `log` a text file
for whatever the agent wants kept with the trial. An agent may also have
`prepare_image(image, config, runtime) -> (image, config)`, which the trial calls to make its
sandbox's image (an agent program installs itself there: tumbler.agents). `load_agent("oracle"
| "nop" | "claude-code" | "package.module:factory")` makes one by name.
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from tumbler.archives import tar_directory
from tumbler.errors import InvalidRequest
from tumbler import ops


@dataclass
class AgentOutcome:
    exit_code: int | None = 0
    timed_out: bool = False
    error: str | None = None
    """Why the agent could not do its turn (not a wrong answer: that is the verifier's call)."""


class Agent(Protocol):
    name: str

    def run(self, sandbox, task, timeout_s: float, log: IO[str]) -> AgentOutcome: ...


class NopAgent:
    """Does nothing: every shipped task must fail with it."""

    name = "nop"

    def run(self, sandbox, task, timeout_s: float, log: IO[str]) -> AgentOutcome:
        log.write("the nop agent did nothing\n")
        return AgentOutcome()


class OracleAgent:
    """Runs the task's own solution (Harbor's solution/solve.sh, Terminal-Bench's solution.sh)
    from /solution, copied in for its turn only."""

    name = "oracle"

    def run(self, sandbox, task, timeout_s: float, log: IO[str]) -> AgentOutcome:
        if not task.has_oracle:
            return AgentOutcome(None, error=f"task {task.id} has no solution to run")
        upload(sandbox, "/solution", task.solution)
        result = sandbox.exec(task.solution_command, timeout=timeout_s, max_output=1 << 20)
        log.write(result.stdout + result.stderr)
        if result.timed_out:
            return AgentOutcome(None, timed_out=True)
        return AgentOutcome(result.exit_code)


def upload(sandbox, remote: str, files: list[tuple[Path, str]]) -> None:
    """Copy host `files` (path, relative name) to folder `remote` in the sandbox."""
    with tempfile.TemporaryDirectory(prefix="tumbler-upload-") as tmp:
        for src, name in files:
            dest = Path(tmp) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read_bytes())
            dest.chmod(0o755 if name.endswith(".sh") else 0o644)
        sandbox.mkdir(remote)
        sandbox.do(ops.upload_tar(remote, tar_directory(Path(tmp))))


def load_agent(spec: str, owner=None) -> Agent:
    """"oracle", "nop", an agent program (a shipped name such as "claude-code", or a program
    .toml; see tumbler.agents) whose model calls `owner` answers, or "module:factory" (a
    callable returning an agent, or a class)."""
    if spec == "oracle":
        return OracleAgent()
    if spec in ("nop", "none"):
        return NopAgent()
    module, colon, attr = spec.partition(":")
    if not colon:
        from tumbler.agents import ProgramAgent, load_program, shipped_programs
        if spec in shipped_programs() or spec.endswith(".toml"):
            if owner is None:
                raise InvalidRequest(f"agent {spec!r} calls a model: give it one (--model-url "
                                     "URL, or --script TABLE.json for a scripted owner)")
            return ProgramAgent(load_program(spec), owner)
        raise InvalidRequest(f"agent {spec!r}: use oracle, nop, an agent program "
                             f"({', '.join(shipped_programs())}, or a .toml), or module:factory")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequest(f"agent {spec!r}: {exc}") from None
    agent = factory()
    if not callable(getattr(agent, "run", None)):
        raise InvalidRequest(f"agent {spec!r}: {attr}() gave an object without run()")
    return agent
