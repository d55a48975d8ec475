"""N tasks x K trials, concurrently, resumable.

    out/results.jsonl                 one TrialResult per finished trial, appended and fsynced
    out/trials/<task>/<k>/agent.log   what the agent wrote; verifier.log: the verifier's output

A run pointed at an `out` that has results skips every (task, trial) already there, so a run
that crashed (or was stopped) goes on where it was and redoes nothing that finished; a torn
last line is ignored. Images are built first, one task at a time (cached by step), then the
trials run `concurrency` at a time, each in its own sandboxes.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from tumbler.errors import InvalidRequest, TumblerError
from tumbler.tasks.agents import Agent
from tumbler.tasks.model import Task
from tumbler.tasks.trial import TrialResult, run_trial, task_image
from tumbler.tasks.verify import sweep_stale

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"


def finished(out_dir: Path) -> dict[tuple[str, int], TrialResult]:
    """The trials `out_dir/results.jsonl` holds, by (task id, trial)."""
    done: dict[tuple[str, int], TrialResult] = {}
    try:
        lines = (out_dir / RESULTS).read_text().splitlines()
    except FileNotFoundError:
        return done
    for line in lines:
        try:
            r = TrialResult.model_validate_json(line)
        except ValidationError:
            continue          # a line torn by a crash: that trial runs again
        done[(r.task_id, r.trial)] = r
    return done


def run_tasks(tasks: list[Task], agent: Agent, *, k: int = 1, concurrency: int = 1,
              out_dir: Path, runtime=None, verifier_network: str = "none",
              on_build: Callable[[Task, str, int, int, str], None] | None = None,
              on_trial: Callable[[TrialResult, bool], None] | None = None) -> list[TrialResult]:
    """Run every task `k` times with `agent`; returns all results (earlier ones included).

    on_build(task, kind, step, total, text) follows image builds; on_trial(result, resumed)
    is called once per trial, resumed ones first."""
    if k < 1 or concurrency < 1:
        raise InvalidRequest("k and concurrency must be at least 1")
    if runtime is None:
        from tumbler.local import default_runtime
        runtime = default_runtime()
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep_stale(runtime.images)
    done = finished(out_dir)
    for r in done.values():
        if on_trial:
            on_trial(r, True)
    todo = [(t, i) for t in tasks for i in range(k) if (t.id, i) not in done]
    images = _build_images([t for t in tasks if any(t is x for x, _ in todo)], runtime, on_build)
    lock = threading.Lock()
    results = list(done.values())

    def one(task: Task, i: int) -> TrialResult:
        image = images.get(task.id)
        if isinstance(image, TrialResult):   # the build failed: every trial says so
            return image.model_copy(update={"trial": i, "agent": agent.name})
        try:
            return run_trial(task, agent, i, out_dir / "trials" / task.id / str(i), runtime,
                             image=image, verifier_network=verifier_network)
        except Exception as exc:   # an agent's or a bug's: this trial fails, the run goes on
            log.exception("trial %s/%d crashed", task.id, i)
            return TrialResult(task_id=task.id, trial=i, agent=agent.name, reward=0.0,
                               passed=False, error="trial_error",
                               reason=f"{type(exc).__name__}: {exc}"[-4000:])

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="trial") as pool:
        futures = {pool.submit(one, t, i): (t, i) for t, i in todo}
        for future in as_completed(futures):
            result = future.result()
            with lock:
                _append(out_dir / RESULTS, result)
                results.append(result)
            if on_trial:
                on_trial(result, False)
    return results


def _build_images(tasks: list[Task], runtime, on_build) -> dict:
    images: dict = {}
    for task in tasks:
        try:
            images[task.id] = task_image(
                task, runtime, on_event=(lambda kind, n, total, text, t=task:
                                         on_build(t, kind, n, total, text)) if on_build else None)
        except TumblerError as exc:
            log.warning("image of task %s did not build: %s", task.id, exc)
            images[task.id] = TrialResult(task_id=task.id, trial=0, agent="", reward=0.0,
                                          passed=False, error="build_error", reason=str(exc)[-4000:])
    return images


def _append(path: Path, result: TrialResult) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(result.model_dump(mode="json")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
