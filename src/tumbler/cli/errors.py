"""How every `tumbler` command reports a Tumbler error: its message on stderr, exit status 2."""
from __future__ import annotations

import functools

import typer
from rich.console import Console

from tumbler.errors import TumblerError

err = Console(stderr=True)


def fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def reports_errors(command):
    """Decorate a command so that a TumblerError ends it with its message, not a traceback."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TumblerError as exc:
            fail(exc.message)
    return run
