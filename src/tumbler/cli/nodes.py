"""`tumbler node ls`: the machines a Tumbler server places sandboxes on (one, or in cluster mode
each node host), with budget, what is admitted, sandboxes and state."""
from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tumbler.cli.errors import reports_errors
from tumbler.cli.options import TOKEN, URL

node_app = typer.Typer(no_args_is_help=True, help="The nodes of a Tumbler server (cluster mode: "
                                                  "its node hosts).")
console = Console()


@node_app.command("ls")
@reports_errors
def node_ls(url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """List nodes: state (alive, lost or released), backend, labels, memory and cpus admitted
    of their budget, sandboxes by state, the server's images each is known to have."""
    from tumbler.sdk import Client
    with Client(url, token) as client:
        nodes = client.nodes()
    table = Table("node", "state", "backend", "labels", "memory admitted", "cpus admitted",
                  "sandboxes", "images")
    for n in nodes:
        mem = f"{int(n.admitted['memory_bytes']) >> 20} / {int(n.budget['memory_bytes']) >> 20} MiB"
        cpus = f"{n.admitted['cpus']:g} / {n.budget['cpus']:g}"
        boxes = ", ".join(f"{k} {v}" for k, v in sorted(n.sandboxes.items())) or "none"
        labels = ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
        table.add_row(n.name, n.state + (f" ({n.lost})" if n.lost else ""), n.backend, labels, mem,
                      cpus, boxes, ", ".join(sorted(n.images)))
    console.print(table)
