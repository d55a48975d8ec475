"""`tumbler tasks`: list task sets, and run N tasks x K trials with a results table."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tumbler.cli.errors import reports_errors

tasks_app = typer.Typer(no_args_is_help=True, help="Task sets (Harbor, Terminal-Bench 1, "
                        "SWE-style rows, the shipped scenarios) and their runner.")
console = Console()


@tasks_app.command("ls")
@reports_errors
def ls(where: Optional[str] = typer.Argument(None, help="a set name or folder (default: list "
                                              "the shipped sets)")):
    """List the shipped sets, or the tasks of one set or folder."""
    from tumbler.tasks.loader import load_tasks, shipped_sets
    if where is None:
        table = Table("set", "tasks")
        for name in shipped_sets():
            table.add_row(name, str(len(load_tasks(name))))
        console.print(table)
        return
    table = Table("task", "format", "oracle", "agent timeout s", "instruction")
    for t in load_tasks(where):
        table.add_row(t.id, t.format, "yes" if t.has_oracle else "no", f"{t.agent_timeout_s:.0f}",
                      (t.metadata.get("issue_title") or t.instruction.splitlines()[0])[:70])
    console.print(table)


@tasks_app.command("run")
@reports_errors
def run(where: str = typer.Argument(..., help="a shipped set (devops, data, support, swe-mini), "
                                     "a folder of task folders, one task folder, or a .jsonl "
                                     "of SWE-style rows"),
        task: list[str] = typer.Option([], "--task", help="only this task id (repeatable)"),
        oracle: bool = typer.Option(False, "--oracle", help="run each task's own solution"),
        agent: str = typer.Option("nop", help="oracle, nop, an agent program (bash, "
                                  "mini-swe-agent, qwen-code, claude-code, or a .toml), or "
                                  "module:factory"),
        model_url: Optional[str] = typer.Option(None, help="an agent program's model: an "
                                                "OpenAI-compatible server (base URL ending in /v1)"),
        model_key: Optional[str] = typer.Option(None, envvar="TUMBLER_MODEL_KEY",
                                                help="API key for --model-url"),
        model: Optional[str] = typer.Option(None, help="model name sent to --model-url"),
        script: Optional[Path] = typer.Option(None, help="answer an agent program's model calls "
                                              "from this table (JSON rows; no LLM)"),
        k: int = typer.Option(1, "-k", "--trials", help="trials per task"),
        concurrency: int = typer.Option(4, "-c", "--concurrency", help="trials at once"),
        out: Path = typer.Option(Path("runs/tasks"), "--out", "-o", help="results folder; a "
                                 "run into a folder with results resumes it"),
        verifier_network: str = typer.Option("none", help="the verifier's network: none or host")):
    """Run tasks x trials; results go to OUT/results.jsonl, logs to OUT/trials/."""
    from tumbler.tasks.agents import load_agent
    from tumbler.tasks.loader import load_tasks
    from tumbler.tasks.report import table
    from tumbler.tasks.runner import run_tasks
    tasks = load_tasks(where, task or None)
    from tumbler.agents.owners import ScriptedOwner, UpstreamOwner
    owner = (ScriptedOwner.from_file(script) if script else
             UpstreamOwner(model_url, api_key=model_key, model=model) if model_url else None)
    chosen = load_agent("oracle" if oracle else agent, owner)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, console=console) as progress:
        builds = progress.add_task("images", total=len(tasks), note="")
        trials = progress.add_task("trials", total=len(tasks) * k, note="")
        built: set[str] = set()

        def on_build(t, kind, n, total, text):
            progress.update(builds, note=f"{t.id}: step {n}/{total} {text[:50]}")
            if kind == "done" and t.id not in built:
                built.add(t.id)
                progress.advance(builds)

        def on_trial(result, resumed):
            mark = "resumed" if resumed else ("passed" if result.passed else (result.error or "failed"))
            progress.update(trials, note=f"{result.task_id}#{result.trial}: {mark}")
            progress.advance(trials)
        results = run_tasks(tasks, chosen, k=k, concurrency=concurrency, out_dir=out,
                            verifier_network=verifier_network, on_build=on_build,
                            on_trial=on_trial)
        progress.update(builds, completed=len(tasks), note="")
    wanted = {t.id for t in tasks}
    results = [r for r in results if r.task_id in wanted and r.trial < k]
    console.print(table(results, k, title=f"{where} with {chosen.name}: {out / 'results.jsonl'}"))
