"""A task, whatever folder format it came from: what to build, what to ask, how to verify."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Task(BaseModel):
    """One task, loaded from a Harbor or Terminal-Bench 1 folder or a SWE-style row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """The task's folder name (unique within its set)."""
    path: Path
    """The task's folder."""
    format: Literal["harbor", "tbench1", "swebench"]
    instruction: str
    """What the agent is told."""
    context: Path
    """The image's build context."""
    dockerfile: Path
    tests: list[tuple[Path, str]]
    """Host files and the names they get under /tests, copied in after the agent finishes."""
    test_command: list[str]
    """How the verifier starts, in the verifier's sandbox."""
    reward_kind: Literal["file", "pytest", "tests"]
    """"file": /logs/verifier/reward.txt or reward.json; "pytest": the test output's summary;
    "tests": /logs/verifier/results.json, each named test's outcome (SWE-style rows)."""
    solution: list[tuple[Path, str]] = []
    """Host files and their names under /solution, for the oracle."""
    solution_command: list[str] = []
    agent_timeout_s: float = Field(600.0, gt=0)
    verifier_timeout_s: float = Field(600.0, gt=0)
    build_timeout_s: float = Field(1800.0, gt=0)
    memory: str = "2g"
    cpus: float = 1.0
    disk: str = "4g"
    workdir: str | None = None
    """Where the agent starts (Harbor's [environment] workdir); default: the image's WORKDIR."""
    verifier_env: dict[str, str] = {}
    """Extra environment for the verifier (Terminal-Bench's TEST_DIR)."""
    fail_to_pass: list[str] = []
    """With reward_kind "tests": the tests a fix must make pass..."""
    pass_to_pass: list[str] = []
    """...and those it must keep passing."""
    protected: list[str] = []
    """Absolute paths the verifier takes from the pristine image, beyond the usual ones
    (verify.PRUNED): an interpreter's prefix outside /usr."""
    metadata: dict = {}

    @property
    def has_oracle(self) -> bool:
        return bool(self.solution_command)
