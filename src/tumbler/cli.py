"""The `tumbler` command."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tumbler.cli_errors import err, reports_errors
from tumbler.errors import InvalidRequest
from tumbler.remote_cli import pool_app, sandbox_app as remote_sandbox_app
from tumbler.server.cli import serve

app = typer.Typer(no_args_is_help=True, help="Isolated Linux sandboxes for LLM agents.")
image_app = typer.Typer(no_args_is_help=True, help="Images of the process runtime.")
sandbox_app = typer.Typer(no_args_is_help=True,
                          help="Sandboxes on this machine, without a server (process runtime).")
app.add_typer(image_app, name="image")
# `tumbler sandbox ...` talks to a server (tumbler serve); the serverless commands are `local`.
app.add_typer(remote_sandbox_app, name="sandbox")
app.add_typer(sandbox_app, name="local")
app.add_typer(pool_app, name="pool")
app.command("serve")(serve)
console = Console()


def _store():
    from tumbler.runtime.images import ImageStore
    return ImageStore()


def _runtime():
    from tumbler.runtime.process import ProcessRuntime
    return ProcessRuntime()


@image_app.command("build")
@reports_errors
def image_build(name: str = typer.Argument("debian"),
                suite: str = typer.Option("bookworm", help="Debian suite"),
                packages: str = typer.Option(",".join(("bash", "coreutils", "procps", "python3", "git",
                                                       "ca-certificates")), help="comma-separated"),
                force: bool = typer.Option(False, help="rebuild even if the image exists")):
    """Build a Debian image with mmdebstrap (cached: an existing image is kept)."""
    store = _store()
    if store.exists(name) and not force:
        console.print(f"image [bold]{name}[/bold] exists (use --force to rebuild)")
        return
    with console.status(f"building {name} from Debian {suite}...") as status:
        store.build(name, suite=suite, packages=tuple(packages.split(",")), force=force,
                    on_output=lambda line: status.update(f"building {name}: {line[:100]}"))
    console.print(f"built image [bold]{name}[/bold]")


@image_app.command("add-pip")
@reports_errors
def image_add_pip(name: str, packages: list[str] = typer.Argument(..., help="pip requirements, "
                                                                   "e.g. gem-llm==0.1.0"),
                  base: str = typer.Option("debian-pip", help="an image with python3-pip; "
                                           "debian-pip is built first if missing"),
                  check: Optional[str] = typer.Option(None, help="Python code that must run in "
                                                      "the new image, e.g. 'import gem'"),
                  force: bool = typer.Option(False, help="rebuild even if the image exists")):
    """Make image NAME: BASE with PACKAGES pip-installed (in a sandbox with the host's network)."""
    import time
    from tumbler.runtime.pip_images import build_pip_image
    store = _store()
    if store.exists(name) and not force:
        console.print(f"image [bold]{name}[/bold] exists (use --force to rebuild)")
        return
    started = time.monotonic()
    with console.status(f"installing {' '.join(packages)} on {base}...") as status:
        build_pip_image(name, packages, base=base, check=check, force=force,
                        on_output=lambda line: status.update(f"building {name}: {line[:100]}"))
    console.print(f"built image [bold]{name}[/bold] in {time.monotonic() - started:.0f} s")


@image_app.command("import")
@reports_errors
def image_import(name: str, tar: Path, force: bool = typer.Option(False)):
    """Import a root filesystem tar (`docker export`, `podman export`) as an image."""
    with console.status(f"importing {tar}..."):
        _store().import_tar(name, tar, force=force)
    console.print(f"imported image [bold]{name}[/bold]")


@image_app.command("to-docker")
@reports_errors
def image_to_docker(name: str, tag: Optional[str] = typer.Argument(None, help="default: NAME"),
                    engine: Optional[str] = typer.Option(None, help="engine URL (default: DOCKER_HOST "
                                                         "or the first socket found)")):
    """Import a process-runtime image into the container engine (Docker or Podman) as TAG."""
    from tumbler.runtime.container_images import to_engine
    from tumbler.runtime.engine import connect
    with console.status(f"importing {name} into the container engine..."):
        tag = to_engine(connect(engine), _store(), name, tag)
    console.print(f"engine image [bold]{tag}[/bold] made from [bold]{name}[/bold]")


@image_app.command("from-docker")
@reports_errors
def image_from_docker(tag: str, name: str, force: bool = typer.Option(False),
                      pull: bool = typer.Option(False, help="pull TAG from its registry first"),
                      engine: Optional[str] = typer.Option(None, help="engine URL")):
    """Export a container engine image (flattened) into the process runtime's image store."""
    from tumbler.runtime import container_images
    from tumbler.runtime.engine import connect
    client = connect(engine)
    if pull:
        with console.status(f"pulling {tag}..."):
            container_images.pull(client, tag)
    with console.status(f"exporting {tag} to image {name}..."):
        container_images.from_engine(client, tag, _store(), name, force=force)
    console.print(f"image [bold]{name}[/bold] made from engine image [bold]{tag}[/bold]")


@image_app.command("ls")
def image_ls():
    """List images."""
    table = Table("name", "parent", "source")
    for im in _store().list():
        table.add_row(im.name, im.parent or "", im.source)
    console.print(table)


@image_app.command("rm")
@reports_errors
def image_rm(name: str):
    """Remove an image (not while a sandbox or a snapshot uses it)."""
    rt = _runtime()
    rt.images.remove(name, in_use=lambda n: any(s.spec.image == n for s in rt.list()))
    console.print(f"removed image [bold]{name}[/bold]")


@sandbox_app.command("create")
@reports_errors
def sandbox_create(image: str = typer.Option("debian"), memory: str = typer.Option("512m"),
                   cpus: float = typer.Option(1.0), pids: int = typer.Option(512),
                   network: str = typer.Option("none", help="none or host")):
    """Create and start a sandbox; prints its id."""
    from tumbler.runtime.spec import Limits, SandboxSpec
    try:
        spec = SandboxSpec(image=image, network=network,
                           limits=Limits(memory=memory, cpus=cpus, pids=pids))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    rt = _runtime()
    info = rt.create(spec)
    rt.start(info.id)
    console.print(info.id)


@sandbox_app.command("ls")
def sandbox_ls():
    """List sandboxes."""
    table = Table("id", "image", "state")
    for s in _runtime().list():
        table.add_row(s.id, s.spec.image, s.state.value)
    console.print(table)


@sandbox_app.command("exec")
@reports_errors
def sandbox_exec(sandbox_id: str, command: str, timeout: float = typer.Option(300.0)):
    """Run a shell command in a sandbox's default session; exits with its exit code."""
    from tumbler.local import LocalSandbox
    sb = LocalSandbox.attach(sandbox_id, _runtime())
    result = sb.run(command, timeout=timeout,
                    on_output=lambda chunk: (sys.stdout.buffer.write(chunk), sys.stdout.flush()))
    if result.timed_out:
        err.print(f"[yellow]timed out after {timeout} s[/yellow]")
    raise typer.Exit(result.exit_code if result.exit_code is not None else 124)


@sandbox_app.command("reset")
@reports_errors
def sandbox_reset(sandbox_id: str):
    """Reset a sandbox to its pristine image."""
    _runtime().reset(sandbox_id)


@sandbox_app.command("stop")
@reports_errors
def sandbox_stop(sandbox_id: str):
    _runtime().stop(sandbox_id)


@sandbox_app.command("rm")
@reports_errors
def sandbox_rm(sandbox_ids: list[str]):
    """Remove sandboxes: every process, mount, cgroup and file of theirs."""
    rt = _runtime()
    for sid in sandbox_ids:
        rt.remove(sid)


@sandbox_app.command("snapshot")
@reports_errors
def sandbox_snapshot(sandbox_id: str, image: str):
    """Save a sandbox's files as a new image."""
    _runtime().snapshot(sandbox_id, image)
    console.print(f"saved image [bold]{image}[/bold]")


@app.command()
def demo(count: int = typer.Option(50, help="sandboxes to start at once")):
    """Show sandboxes at work, with timings."""
    from tumbler.demo import main
    main(count)


if __name__ == "__main__":
    app()
