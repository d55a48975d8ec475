"""Figures over trials: resolved rate, pass@k (the unbiased estimator), mean reward, time."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import comb

from rich.table import Column, Table

from tumbler.tasks.trial import TrialResult


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k trials drawn from n passes), c of the n having passed."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


@dataclass
class Summary:
    tasks: int
    trials: int
    resolved_rate: float
    """Passed trials over all trials."""
    pass_at_k: dict[int, float]
    mean_reward: float
    mean_seconds: float
    errors: dict[str, int]


def summarize(results: list[TrialResult], k: int) -> Summary:
    by_task: dict[str, list[TrialResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    n = len(results) or 1
    ks = sorted({1, k})
    errors: dict[str, int] = defaultdict(int)
    for r in results:
        if r.error:
            errors[r.error] += 1
    return Summary(
        tasks=len(by_task), trials=len(results),
        resolved_rate=sum(r.passed for r in results) / n,
        pass_at_k={j: sum(pass_at_k(len(rs), sum(r.passed for r in rs), min(j, len(rs)))
                          for rs in by_task.values()) / (len(by_task) or 1) for j in ks},
        mean_reward=sum(r.reward for r in results) / n,
        mean_seconds=sum(r.seconds for r in results) / n, errors=dict(errors))


def table(results: list[TrialResult], k: int, title: str = "") -> Table:
    """One row per task, then the totals."""
    by_task: dict[str, list[TrialResult]] = defaultdict(list)
    for r in results:
        by_task[r.task_id].append(r)
    t = Table("trials", "resolved", f"pass@{k}", "mean reward", "s / trial", "errors",
              title=title or None)
    t.columns.insert(0, Column("task", no_wrap=True, min_width=12))
    for task_id in sorted(by_task):
        rs = by_task[task_id]
        c = sum(r.passed for r in rs)
        errs = ", ".join(sorted({f"{r.error}: {r.reason[:60]}" for r in rs if r.error}))
        t.add_row(task_id, str(len(rs)), f"{c}/{len(rs)}",
                  f"{pass_at_k(len(rs), c, min(k, len(rs))):.2f}",
                  f"{sum(r.reward for r in rs) / len(rs):.2f}",
                  f"{sum(r.seconds for r in rs) / len(rs):.1f}", errs)
    s = summarize(results, k)
    t.add_section()
    t.add_row("all", str(s.trials), f"{s.resolved_rate:.0%}", f"{s.pass_at_k[k]:.2f}",
              f"{s.mean_reward:.2f}", f"{s.mean_seconds:.1f}",
              ", ".join(f"{e}: {n}" for e, n in sorted(s.errors.items())))
    return t
