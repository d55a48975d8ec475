"""The `tumbler` command."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import tumbler.cli_help  # noqa: F401  (flags drawn as flags in --help)
from tumbler.cli_errors import err, fail, reports_errors
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
from tumbler.tasks.cli import tasks_app  # noqa: E402
app.add_typer(tasks_app, name="tasks")
app.command("serve")(serve)
# the trainer's command; torch loads only when it runs
from tumbler.train.cli import train  # noqa: E402
app.command("train")(train)
console = Console()


def _store():
    from tumbler.runtime.images import ImageStore
    return ImageStore()


def _runtime():
    from tumbler.runtime.process import ProcessRuntime
    return ProcessRuntime()


@image_app.command("build")
@reports_errors
def image_build(name: str = typer.Argument("debian", help="the new image's name"),
                suite: str = typer.Option("bookworm", help="Debian suite"),
                packages: str = typer.Option(",".join(("bash", "coreutils", "procps", "python3", "git",
                                                       "ca-certificates")),
                                             help="Debian packages to install, comma-separated"),
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
def image_add_pip(name: str = typer.Argument(..., help="the new image's name"), packages: list[str] = typer.Argument(..., help="pip requirements, "
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


from tumbler.image_cli import build_file  # noqa: E402
image_app.command("build-file")(build_file)


@image_app.command("import")
@reports_errors
def image_import(name: str = typer.Argument(..., help="the new image's name"),
                 tar: Path = typer.Argument(..., help="the root filesystem tar"),
                 force: bool = typer.Option(False, help="replace image NAME if it exists")):
    """Import a root filesystem tar (`docker export`, `podman export`) as an image."""
    with console.status(f"importing {tar}..."):
        _store().import_tar(name, tar, force=force)
    console.print(f"imported image [bold]{name}[/bold]")


@image_app.command("to-docker")
@reports_errors
def image_to_docker(name: str = typer.Argument(..., help="the process-runtime image"), tag: Optional[str] = typer.Argument(None, help="default: NAME"),
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
def image_from_docker(tag: str = typer.Argument(..., help="the engine image, e.g. python:3.11"),
                      name: str = typer.Argument(..., help="the new process-runtime image's name"),
                      force: bool = typer.Option(False, help="replace image NAME if it exists"),
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
def image_rm(name: str = typer.Argument(..., help="the image to remove")):
    """Remove an image (not while a sandbox or a snapshot uses it)."""
    rt = _runtime()
    if not rt.images.exists(name):
        fail(f"no image {name!r}; `tumbler image ls` lists the images there are")
    rt.images.remove(name, in_use=lambda n: any(s.spec.image == n for s in rt.list()))
    console.print(f"removed image [bold]{name}[/bold]")


@sandbox_app.command("create")
@reports_errors
def sandbox_create(image: str = typer.Option("debian", help="image to start (tumbler image ls)"),
                   memory: str = typer.Option("512m", help="memory limit, e.g. 512m, 2g"),
                   cpus: float = typer.Option(1.0, help="CPU limit, cores (0.5: half a core)"),
                   pids: int = typer.Option(512, help="most processes and threads at once"),
                   disk: str = typer.Option("2g", help="bytes the sandbox may write, e.g. 2g"),
                   env: list[str] = typer.Option([], help="KEY=VALUE in the environment of "
                                                 "every process (repeatable)"),
                   cwd: str = typer.Option("/root", help="working directory of sessions and exec"),
                   hostname: str = typer.Option("sandbox", help="the sandbox's hostname"),
                   network: str = typer.Option("none", help="none (loopback only) or host")):
    """Create and start a sandbox; prints its id. No server, so no TTL or max lifetime: remove
    it with `tumbler local rm ID` (or use `tumbler sandbox create --ttl/--max-lifetime`)."""
    from tumbler.runtime.spec import Limits, SandboxSpec
    try:
        spec = SandboxSpec(image=image, network=network, env=_pairs(env, "--env"), cwd=cwd,
                           hostname=hostname,
                           limits=Limits(memory=memory, cpus=cpus, pids=pids, disk=disk))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    rt = _runtime()
    info = rt.create(spec)
    try:
        rt.start(info.id)
    except BaseException:
        rt.remove(info.id)
        raise
    console.print(info.id)


def _pairs(items: list[str], option: str) -> dict[str, str]:
    """KEY=VALUE items as a dict; an item without '=' is an error that says so."""
    bad = [item for item in items if "=" not in item or not item.partition("=")[0]]
    if bad:
        raise InvalidRequest(f"{option} takes KEY=VALUE, not {bad[0]!r}")
    return dict(item.split("=", 1) for item in items)


@sandbox_app.command("ls")
def sandbox_ls():
    """List sandboxes."""
    from tumbler.runtime.owners import describe
    table = Table("id", "image", "state", "owner")
    for s in _runtime().list():
        table.add_row(s.id, s.spec.image, s.state.value, describe(s.spec.labels))
    console.print(table)


@sandbox_app.command("exec")
@reports_errors
def sandbox_exec(sandbox_id: str = typer.Argument(..., help="the sandbox's id"),
                 command: str = typer.Argument(..., help="a bash command line"),
                 timeout: float = typer.Option(300.0, help="seconds before the command is "
                                               "interrupted (exit status 124)")):
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
def sandbox_reset(sandbox_id: str = typer.Argument(..., help="the sandbox's id")):
    """Reset a sandbox to its pristine image (its files are lost; it runs after)."""
    _runtime().reset(sandbox_id)


@sandbox_app.command("stop")
@reports_errors
def sandbox_stop(sandbox_id: str = typer.Argument(..., help="the sandbox's id")):
    """Stop a sandbox: its processes end, its files are kept (`tumbler local start` resumes)."""
    _runtime().stop(sandbox_id)


@sandbox_app.command("start")
@reports_errors
def sandbox_start(sandbox_id: str = typer.Argument(..., help="the sandbox's id")):
    """Start a stopped sandbox again, with the files it had (`reset` would wipe them)."""
    _runtime().start(sandbox_id)


@sandbox_app.command("rm")
@reports_errors
def sandbox_rm(sandbox_ids: list[str] = typer.Argument(..., help="the sandboxes' ids")):
    """Remove sandboxes: every process, mount, cgroup and file of theirs."""
    rt = _runtime()
    for sid in sandbox_ids:
        rt.remove(sid)


@sandbox_app.command("snapshot")
@reports_errors
def sandbox_snapshot(sandbox_id: str = typer.Argument(..., help="the sandbox's id"),
                     image: str = typer.Argument(..., help="the new image's name")):
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
