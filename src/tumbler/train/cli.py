"""`tumbler train CONFIG.yaml [--set key=value ...]`: one run with a rich progress display."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tumbler.cli.errors import reports_errors

console = Console()


def _step_table(history: list[dict], evals: list[dict], started: float, target) -> Table:
    table = Table(title=f"GRPO · {time.monotonic() - started:.0f} s", expand=False)
    for column in ("step", "reward", "success", "turns", "tokens/s", "env steps/s",
                   "gen s", "env s", "update s", "loss"):
        table.add_column(column, justify="right")
    for m in history[-12:]:
        table.add_row(str(m["step"]), f"{m['reward_mean']:.3f}", f"{m['success_rate']:.2f}",
                      f"{m['turns_mean']:.2f}", f"{m['tokens_per_s']:.0f}",
                      f"{m['env_steps_per_s']:.0f}", f"{m['generation_s']:.1f}",
                      f"{m['env_s']:.2f}", f"{m['update_s']:.1f}", f"{m['loss']:+.4f}")
    if evals:
        line = "  ".join(f"step {e['step']}: {e['success_rate']:.2f}" for e in evals)
        goal = f"  (target {target:.2f})" if target is not None else ""
        table.caption = f"held-out success — {line}{goal}"
    return table


def passive_omp_threads() -> None:
    """OpenMP threads that sleep when idle, unless the environment says otherwise (set before
    torch loads). Spinning threads are faster by a hair on an idle machine, but on a shared one
    a spinning thread that loses its core stalls every parallel kernel: one 16-row turn took
    8.6-10.9 CPU s with spinning threads against 2.4-2.7 s passive at load 5-10 here."""
    import os
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@reports_errors
def train(config: Optional[Path] = typer.Argument(None, help="a YAML config (see docs/TRAINER.md)"),
          set_: Optional[list[str]] = typer.Option(None, "--set", help="override: key=value "
                                                   "(dotted keys, YAML values), repeatable"),
          resume: Optional[Path] = typer.Option(None, "--resume", help="continue this run "
                                                "directory from its last checkpoint"),
          verbose: bool = typer.Option(False, "-v", help="log each step too")):
    """Train a policy with GRPO on an env (examples/train/*.yaml), or --resume a killed run."""
    passive_omp_threads()
    from tumbler.errors import InvalidRequest
    from tumbler.train.config import load_config
    if (config is None) == (resume is None):
        raise InvalidRequest("give a config file, or --resume RUN_DIR (not both)")
    if resume:
        from tumbler.train.trainer import latest_checkpoint
        latest_checkpoint(resume)      # not a run dir, or finished: a clear error before loading
    cfg = load_config(resume / "config.yaml" if resume else config, set_ or [])
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    history: list[dict] = []
    evals: list[dict] = []
    started = time.monotonic()
    with console.status(f"loading {cfg.model.name} and starting "
                        f"{'sandboxes' if cfg.env.hosted else 'envs'}..."):
        from tumbler.train.trainer import Trainer
        setup_start = time.monotonic()
        trainer = Trainer(cfg, on_step=history.append, on_eval=evals.append,
                          resume=str(resume) if resume else None)
        setup_s = time.monotonic() - setup_start
    console.print(f"setup {setup_s:.1f} s · run dir [bold]{trainer.run_dir.path}[/bold]")
    with Live(_step_table(history, evals, started, cfg.target_success), console=console,
              refresh_per_second=1) as live:
        trainer.on_step = lambda m: (history.append(m), live.update(
            _step_table(history, evals, started, cfg.target_success)))
        trainer.on_eval = lambda r: (evals.append(r), live.update(
            _step_table(history, evals, started, cfg.target_success)))
        result = trainer.run()
    before = result.eval_before or {}
    after = result.eval_after or {}
    console.print(f"trained {result.steps} steps in {result.train_seconds:.0f} s "
                  f"(evaluations and setup not counted; setup {setup_s:.0f} s)")
    if before:
        console.print(f"held-out success: [bold]{before['success_rate']:.2f}[/bold] before -> "
                      f"[bold]{after['success_rate']:.2f}[/bold] after "
                      f"({cfg.eval.episodes} episodes each; reward {before['reward_mean']:.3f} -> "
                      f"{after['reward_mean']:.3f})")
        if cfg.target_success is not None:
            met = after["success_rate"] >= cfg.target_success
            console.print(f"target {cfg.target_success:.2f}: "
                          + ("[green]reached[/green]" if met else "[yellow]not reached[/yellow]"))
    console.print(f"plot: {result.plot}\nmetrics: {result.run_dir}/metrics.jsonl")
