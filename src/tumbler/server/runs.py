"""Runs as the trainer and the task runner write them, read-only.

A run is a directory directly under the runs dir (`ServerConfig.runs_dir`). A training run
(docs/TRAINER.md, `tumbler.train.rundir`) holds `config.yaml`, `metrics.jsonl` (a line per
step), `eval.jsonl` and `episodes/step-NNNN.json`; a task run (`tumbler.tasks.runner`) holds
`results.jsonl` (a line per finished trial) and `trials/<task>/<trial>/{agent,verifier}.log`
(and `trajectory.jsonl`, the model service's recording, for agents that call a model).
The server only reads them, and only inside the runs dir: a run name is one path component,
and a run directory whose real path leads elsewhere (a symlink out) is not served. Every read
is capped, so a huge or half-written file costs a bounded amount.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from tumbler.errors import InvalidRequest, NotFound, TooLarge

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")
EPISODE_RE = re.compile(r"^step-(\d{1,9})\.json$")
MAX_CONFIG = 1 << 20          # bytes of config.yaml served
MAX_JSONL = 64 << 20          # bytes of metrics/eval JSONL read
MAX_EPISODES = 16 << 20       # bytes of one episodes file
MAX_RECORDS = 10_000          # metrics lines in one answer
MAX_RUNS = 500                # runs listed (newest first)
MAX_LOG = 1 << 20             # bytes of a trial's log served (its end)
MAX_TRAJECTORY = 16 << 20     # bytes of a trial's trajectory.jsonl read
TRAINING = ("metrics.jsonl", "config.yaml")    # a directory holding one of these is a training run
TASKS = ("results.jsonl",)                     # ... and this, a task run
LOGS = {"agent": "agent.log", "verifier": "verifier.log"}


class RunStore:
    """The run directories under `root` (which need not exist yet: then there are none)."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def names(self, markers: tuple[str, ...] = TRAINING) -> list[str]:
        """Runs newest first (by their last write): directories holding one of `markers`."""
        if not self.root.is_dir():
            return []
        runs = []
        for child in self.root.iterdir():
            if NAME_RE.match(child.name) and self._inside(child) and child.is_dir() and any(
                    (child / marker).exists() for marker in markers):
                runs.append((self.modified(child), child.name))
        return [name for _, name in sorted(runs, reverse=True)[:MAX_RUNS]]

    def path(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise InvalidRequest(f"run name {name!r} must be one directory name "
                                 "(letters, digits, '.', '_', '-')")
        run = self.root / name
        if not (self._inside(run) and run.is_dir()):
            raise NotFound(f"no run {name!r} in {self.root} (GET /v1/runs lists them)")
        return run

    def summary(self, name: str) -> dict:
        run = self.path(name)
        metrics = self.records(name, "metrics")
        return {"name": name, "modified": self.modified(run), "steps": len(metrics),
                "last": metrics[-1] if metrics else {}, "evals": self.records(name, "eval"),
                "episode_steps": self.episode_steps(name)}

    def config_text(self, name: str) -> str:
        path = self.path(name) / "config.yaml"
        if not path.is_file():
            return ""
        return _read_capped(path, MAX_CONFIG).decode("utf-8", errors="replace")

    def records(self, name: str, kind: str, after: int = 0) -> list[dict]:
        """Lines of KIND.jsonl from index `after` on (a line still being written is skipped)."""
        path = self.path(name) / f"{kind}.jsonl"
        if not path.is_file():
            return []
        out = []
        for i, line in enumerate(_read_capped(path, MAX_JSONL).splitlines()):
            if i < after:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                break      # the trainer is writing this line now
            if isinstance(record, dict):
                out.append(record)
            if len(out) >= MAX_RECORDS:
                break
        return out

    def episode_steps(self, name: str) -> list[int]:
        folder = self.path(name) / "episodes"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := EPISODE_RE.match(p.name)))

    def episodes(self, name: str, step: int) -> list[dict]:
        path = self.path(name) / "episodes" / f"step-{step:04d}.json"
        if not path.is_file():
            raise NotFound(f"run {name!r} has no rendered episodes for step {step}")
        try:
            rows = json.loads(_read_capped(path, MAX_EPISODES))
        except ValueError:
            raise NotFound(f"episodes of step {step} are being written; ask again") from None
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    def task_summary(self, name: str) -> dict:
        results = self.records(name, "results")
        return {"name": name, "modified": self.modified(self.path(name)), "trials": len(results),
                "passed": sum(r.get("passed") is True for r in results),
                "tasks": len({r.get("task_id") for r in results})}

    def trial_log(self, name: str, task: str, trial: int, which: str) -> tuple[bytes, int]:
        """The end of a trial's agent or verifier log (at most MAX_LOG bytes) and its size."""
        if which not in LOGS:
            raise InvalidRequest(f"log {which!r} must be one of: {', '.join(LOGS)}")
        path = self._trial_file(name, task, trial, LOGS[which])
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - MAX_LOG))
            return f.read(MAX_LOG), size

    def trial_trajectory(self, name: str, task: str, trial: int) -> list[dict]:
        """The trial's recorded episodes (trajectory.jsonl: one a line, each with its exchanges)."""
        path = self._trial_file(name, task, trial, "trajectory.jsonl")
        episodes = []
        for line in _read_capped(path, MAX_TRAJECTORY).splitlines():
            try:
                episode = json.loads(line)
            except ValueError:
                continue
            if isinstance(episode, dict):
                episodes.append(episode)
        return episodes

    def _trial_file(self, name: str, task: str, trial: int, filename: str) -> Path:
        if not NAME_RE.match(task):
            raise InvalidRequest(f"task {task!r} must be one directory name")
        run = self.path(name)
        path = run / "trials" / task / str(trial) / filename
        if not (path.resolve().is_relative_to(run.resolve()) and path.is_file()):
            raise NotFound(f"run {name!r} has no {filename} for {task} trial {trial}")
        return path

    def _inside(self, path: Path) -> bool:
        return path.resolve().parent == self.root

    @staticmethod
    def modified(run: Path) -> float:
        times = [run.stat().st_mtime]
        for name in ("metrics.jsonl", "eval.jsonl", "results.jsonl"):
            if (run / name).exists():
                times.append((run / name).stat().st_mtime)
        return max(times)


def _read_capped(path: Path, cap: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise TooLarge(f"{path.name} is over {cap >> 20} MiB; the console reads at most that")
    return data
