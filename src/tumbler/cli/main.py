"""The `tumbler` command: every group wired into one typer app."""
from __future__ import annotations

import typer

import tumbler.cli.help  # noqa: F401  (flags drawn as flags in --help)
from tumbler.cli.images import image_app
from tumbler.cli.local import local_app
from tumbler.cli.nodes import node_app
from tumbler.cli.remote import pool_app, sandbox_app
from tumbler.cli.serve import serve
from tumbler.tasks.cli import tasks_app
from tumbler.train.cli import train   # the trainer's command; torch loads only when it runs

app = typer.Typer(no_args_is_help=True, help="Isolated Linux sandboxes for LLM agents.")
app.add_typer(image_app, name="image")
# `tumbler sandbox ...` talks to a server (tumbler serve); the serverless commands are `local`.
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(local_app, name="local")
app.add_typer(pool_app, name="pool")
app.add_typer(node_app, name="node")
app.add_typer(tasks_app, name="tasks")
app.command("serve")(serve)
app.command("train")(train)


@app.command()
def demo(count: int = typer.Option(50, help="sandboxes to start at once")):
    """Show sandboxes at work, with timings."""
    from tumbler.demo import main
    main(count)


if __name__ == "__main__":
    app()
