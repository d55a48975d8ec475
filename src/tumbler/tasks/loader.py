"""Finding tasks: one task folder, a folder of them, a file (or folder) of SWE-style rows, or
the name of a shipped set."""
from __future__ import annotations

from pathlib import Path

from tumbler.errors import InvalidRequest, NotFound
from tumbler.tasks.harbor import is_harbor, load_harbor
from tumbler.tasks.model import Task
from tumbler.tasks.swebench import is_rows, load_rows
from tumbler.tasks.tbench import is_tbench, load_tbench

SETS = Path(__file__).parent / "sets"


def shipped_sets() -> list[str]:
    return sorted(p.name for p in SETS.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def load_task(path: str | Path) -> Task:
    """The task in folder `path` (Harbor if it has task.toml, Terminal-Bench 1 if task.yaml)."""
    path = Path(path)
    if is_harbor(path):
        return load_harbor(path)
    if is_tbench(path):
        return load_tbench(path)
    raise InvalidRequest(f"{path} is not a task folder: it has neither task.toml (Harbor) nor "
                         "task.yaml (Terminal-Bench 1)")


def load_tasks(where: str | Path, ids: list[str] | None = None) -> list[Task]:
    """Tasks from a shipped set's name ("devops", "data", "support", "swe-mini"), a folder of
    task folders, one task folder, or SWE-style rows (a .jsonl file, or a folder with
    instances.jsonl: tumbler.tasks.swebench); `ids` keeps only those tasks (each must exist)."""
    path = Path(where)
    if not path.exists() and str(where) in shipped_sets():
        path = SETS / str(where)
    if not path.is_dir() and not (path.is_file() and is_rows(path)):
        raise NotFound(f"no task folder or set {str(where)!r} (nor a .jsonl of rows); shipped "
                       f"sets: {', '.join(shipped_sets())}")
    if is_rows(path) and not (is_harbor(path) or is_tbench(path)):
        tasks = load_rows(path)
    elif is_harbor(path) or is_tbench(path):
        tasks = [load_task(path)]
    else:
        tasks = [load_task(p) for p in sorted(path.iterdir())
                 if p.is_dir() and (is_harbor(p) or is_tbench(p))]
    if not tasks:
        raise InvalidRequest(f"{path} holds no task folders (with task.toml or task.yaml)")
    if ids:
        by_id = {t.id: t for t in tasks}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise NotFound(f"no task {', '.join(missing)} in {path}; it has {', '.join(by_id)}")
        tasks = [by_id[i] for i in ids]
    return tasks
