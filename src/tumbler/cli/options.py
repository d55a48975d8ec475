"""Options and arguments several `tumbler` commands share, defined once (help text included)."""
from __future__ import annotations

import typer

from tumbler.errors import InvalidRequest

SANDBOX_ID = typer.Argument(..., help="the sandbox's id")
SANDBOX_IDS = typer.Argument(..., help="the sandboxes' ids")
NEW_IMAGE = typer.Argument(..., help="the new image's name")

# What a new sandbox is: `tumbler local create` and `tumbler sandbox create` alike.
IMAGE = typer.Option("debian", help="image to start (`tumbler image ls` on its machine)")
MEMORY = typer.Option("512m", help="memory limit, e.g. 512m, 2g")
CPUS = typer.Option(1.0, help="CPU limit, cores (0.5: half a core)")
PIDS = typer.Option(512, help="most processes and threads at once")
DISK = typer.Option("2g", help="bytes the sandbox may write, e.g. 2g")
ENV = typer.Option([], help="KEY=VALUE in the environment of every process (repeatable)")
CWD = typer.Option("/root", help="working directory of sessions and exec")
HOSTNAME = typer.Option("sandbox", help="the sandbox's hostname")
NETWORK = typer.Option("none", help="none (loopback only), egress (only the hosts listed, "
                       "through a proxy) or host")
EGRESS = typer.Option([], "--egress", help="with --network egress: a host it may reach (name, "
                      "name:port, *.name, IP:port), repeatable")
EXEC_TIMEOUT = typer.Option(300.0, help="seconds before the command is interrupted (exit status 124)")

# A server: `tumbler sandbox ...` and `tumbler pool ...`.
URL = typer.Option(None, "--url", envvar="TUMBLER_URL", help="server URL (default http://127.0.0.1:8040)")
TOKEN = typer.Option(None, "--token", envvar="TUMBLER_TOKEN", help="bearer token")


def pairs(items: list[str], option: str) -> dict[str, str]:
    """KEY=VALUE items as a dict; an item without '=' is an error that says so."""
    bad = [item for item in items if "=" not in item or not item.partition("=")[0]]
    if bad:
        raise InvalidRequest(f"{option} takes KEY=VALUE, not {bad[0]!r}")
    return dict(item.split("=", 1) for item in items)
