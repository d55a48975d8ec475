"""One trial: the task's image, a sandbox, the agent's turn, then the verifier (verify.py)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from pydantic import BaseModel

from tumbler.errors import TumblerError
from tumbler.tasks.agents import Agent
from tumbler.tasks.model import Task
from tumbler.tasks.verify import verify

log = logging.getLogger(__name__)


class TrialResult(BaseModel):
    """One line of results.jsonl."""

    task_id: str
    trial: int
    agent: str
    reward: float
    passed: bool
    error: str | None = None
    """Why the trial failed without a verdict: build_error, agent_error, agent_timeout,
    verifier_error, trial_error; None when the verifier gave a reward."""
    reason: str = ""
    rewards: dict[str, float] = {}
    agent_seconds: float = 0.0
    verifier_seconds: float = 0.0
    seconds: float = 0.0
    started: float = 0.0


def task_image(task: Task, runtime, on_event=None):
    """The task's image (built or found in the build cache) and its config."""
    from tumbler.runtime.dockerfile_images import build_dockerfile
    result = build_dockerfile(task.context, dockerfile=task.dockerfile, runtime=runtime,
                              step_timeout_s=task.build_timeout_s, on_event=on_event)
    return result.image, result.config


def trial_image(task: Task, agent, runtime, image: tuple | None = None):
    """The image (name, config) a trial of `task` with `agent` runs in: the task's own (or
    `image`, already built), with the agent's install on top when it has prepare_image."""
    name, config = image or task_image(task, runtime)
    prepare = getattr(agent, "prepare_image", None)   # an agent program installs itself
    if prepare is not None:
        name, config = prepare(name, config, runtime)
    return name, config


def trial_sandbox(task: Task, image: str, config, runtime):
    """The agent's sandbox of a trial: `image` with the task's limits, its WORKDIR and
    /logs/agent made (a LocalSandbox; removed on exit)."""
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(image, env=config.env, cwd=config.workdir, runtime=runtime,
                      memory=task.memory, cpus=task.cpus, disk=task.disk)
    try:
        sb.mkdir(config.workdir)
        sb.mkdir("/logs/agent")
    except BaseException:
        sb.remove()
        raise
    return sb


def run_trial(task: Task, agent: Agent, trial: int, trial_dir: Path, runtime,
              image: tuple | None = None, verifier_network: str = "none") -> TrialResult:
    """Run one trial of `task` with `agent`; logs go to `trial_dir`. Never raises for the
    trial's own failures: they are in the result's error and reason."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    started, wall = time.time(), time.monotonic()
    base = dict(task_id=task.id, trial=trial, agent=agent.name, started=started)
    try:
        name, config = trial_image(task, agent, runtime, image)
    except TumblerError as exc:
        return _failed(base, wall, "build_error", str(exc))
    try:
        with trial_sandbox(task, name, config, runtime) as sb:
            t0 = time.monotonic()
            with open(trial_dir / "agent.log", "w") as agent_log:
                outcome = agent.run(sb, task, task.agent_timeout_s, agent_log)
            agent_s = time.monotonic() - t0
            if outcome.timed_out:
                return _failed(base, wall, "agent_timeout",
                               f"the agent ran past {task.agent_timeout_s:.0f} s and was killed",
                               agent_seconds=agent_s)
            if outcome.error:
                return _failed(base, wall, "agent_error", outcome.error, agent_seconds=agent_s)
            verdict = verify(sb, task, env=config.env, workdir=config.workdir, runtime=runtime,
                             network=verifier_network)
    except TumblerError as exc:
        log.warning("trial %s/%d failed: %s", task.id, trial, exc)
        return _failed(base, wall, "trial_error", str(exc))
    (trial_dir / "verifier.log").write_text(verdict.output)
    return TrialResult(**base, reward=verdict.reward, passed=verdict.passed,
                       error="verifier_error" if verdict.error else None,
                       reason=verdict.error or "", rewards=verdict.rewards,
                       agent_seconds=agent_s, verifier_seconds=verdict.seconds,
                       seconds=time.monotonic() - wall)


def _failed(base: dict, wall: float, error: str, reason: str, **extra) -> TrialResult:
    return TrialResult(**base, reward=0.0, passed=False, error=error, reason=reason[-4000:],
                       seconds=time.monotonic() - wall, **extra)
