"""`tumbler local ...`: sandboxes on this machine, without a server (the process runtime)."""
from __future__ import annotations

import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tumbler.cli import options as o
from tumbler.cli.errors import err, reports_errors
from tumbler.errors import InvalidRequest

local_app = typer.Typer(no_args_is_help=True,
                        help="Sandboxes on this machine, without a server (process runtime).")
console = Console()


def _runtime():
    from tumbler.runtime.process import ProcessRuntime
    return ProcessRuntime()


@local_app.command("create")
@reports_errors
def create(image: str = o.IMAGE, memory: str = o.MEMORY, cpus: float = o.CPUS, pids: int = o.PIDS,
           disk: str = o.DISK, env: list[str] = o.ENV, cwd: str = o.CWD, hostname: str = o.HOSTNAME,
           network: str = o.NETWORK, egress: list[str] = o.EGRESS,
           max_lifetime: Optional[float] = typer.Option(
               None, help="seconds after creation at which it is removed, used or not (a "
                          "watcher process of its own removes it: no server needed)")):
    """Create and start a sandbox; prints its id. It stays until `tumbler local rm ID` or its
    --max-lifetime (idle TTLs need a server: `tumbler sandbox create --ttl`)."""
    from tumbler.runtime import expiry
    from tumbler.runtime.spec import Limits, SandboxSpec
    try:
        labels = expiry.labels_for(max_lifetime) if max_lifetime is not None else {}
        spec = SandboxSpec(image=image, network=network, egress=egress, env=o.pairs(env, "--env"), cwd=cwd,
                           hostname=hostname, labels=labels,
                           limits=Limits(memory=memory, cpus=cpus, pids=pids, disk=disk))
    except ValueError as exc:
        raise InvalidRequest(f"--max-lifetime: {exc}" if "lifetime" in str(exc) else str(exc)) from None
    rt = _runtime()
    info = rt.create(spec)
    try:
        rt.start(info.id)
        if labels:
            expiry.watch(info.id)
    except BaseException:
        rt.remove(info.id)
        raise
    console.print(info.id)


@local_app.command("ls")
def ls():
    """List sandboxes."""
    import time
    from tumbler.runtime.expiry import deadline
    from tumbler.runtime.owners import describe
    table = Table("id", "image", "state", "owner", "removed in")
    now = time.time()
    for s in _runtime().list():
        when = deadline(s.spec.labels)
        table.add_row(s.id, s.spec.image, s.state.value, describe(s.spec.labels),
                      "" if when is None else f"{max(0.0, when - now):.0f} s")
    console.print(table)


@local_app.command("exec")
@reports_errors
def exec_(sandbox_id: str = o.SANDBOX_ID,
          command: str = typer.Argument(..., help="a bash command line"),
          timeout: float = o.EXEC_TIMEOUT):
    """Run a shell command in a sandbox's default session; exits with its exit code."""
    from tumbler.local import LocalSandbox
    sb = LocalSandbox.attach(sandbox_id, _runtime())
    result = sb.run(command, timeout=timeout,
                    on_output=lambda chunk: (sys.stdout.buffer.write(chunk), sys.stdout.flush()))
    if result.timed_out:
        err.print(f"[yellow]timed out after {timeout} s[/yellow]")
    raise typer.Exit(result.exit_code if result.exit_code is not None else 124)


def _life_cycle(op: str, doc: str) -> None:
    """`tumbler local OP ID`: one life-cycle call of the runtime."""
    @local_app.command(op, help=doc)
    @reports_errors
    def command(sandbox_id: str = o.SANDBOX_ID):
        getattr(_runtime(), op)(sandbox_id)


_life_cycle("reset", "Reset a sandbox to its pristine image (its files are lost; it runs after).")
_life_cycle("stop", "Stop a sandbox: its processes end, its files are kept (`tumbler local start` "
                    "resumes).")
_life_cycle("start", "Start a stopped sandbox again, with the files it had (`reset` would wipe them).")


@local_app.command("rm")
@reports_errors
def rm(sandbox_ids: list[str] = o.SANDBOX_IDS):
    """Remove sandboxes: every process, mount, cgroup and file of theirs."""
    rt = _runtime()
    for sid in sandbox_ids:
        rt.remove(sid)


@local_app.command("snapshot")
@reports_errors
def snapshot(sandbox_id: str = o.SANDBOX_ID, image: str = o.NEW_IMAGE):
    """Save a sandbox's files as a new image."""
    _runtime().snapshot(sandbox_id, image)
    console.print(f"saved image [bold]{image}[/bold]")
