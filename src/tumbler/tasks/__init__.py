"""Task sets and their runner: Harbor and Terminal-Bench 1 task folders, SWE-style rows, the
shipped scenarios.

    tasks = load_tasks("devops")                   # a shipped set, a folder of tasks, or one task
    results = run_tasks(tasks, OracleAgent(), k=2, concurrency=4, out_dir=Path("runs/x"))

`model.py` the Task; `harbor.py`, `tbench.py` the two folder formats; `swebench.py` SWE-bench
rows (with `swe_check.py`, their verifier's side in the sandbox); `loader.py` finds them;
`agents.py` what acts in a trial (the oracle, nothing, or yours); `trial.py` one trial;
`verify.py` the verifier, run where nothing the agent left behind can speak for it;
`runner.py` N tasks x K trials with resume; `report.py` pass@k and the table; `cli.py`
`tumbler tasks`. May import `runtime` (images), `local`, `ops`, `archives`, `errors`.
"""
from tumbler.tasks.loader import load_task, load_tasks
from tumbler.tasks.model import Task

__all__ = ["Task", "load_task", "load_tasks"]
