"""`tumbler image ...`: the process runtime's images: built from Debian, from pip packages, from
a Dockerfile (either backend, with progress), imported from a tar or a container engine."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tumbler.cli.errors import fail, reports_errors
from tumbler.cli.options import NEW_IMAGE, pairs
from tumbler.errors import InvalidRequest

console = Console()

image_app = typer.Typer(no_args_is_help=True, help="Images of the process runtime.")


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
def image_add_pip(name: str = NEW_IMAGE,
                  packages: list[str] = typer.Argument(..., help="pip requirements, e.g. gem-llm==0.1.0"),
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
def image_import(name: str = NEW_IMAGE,
                 tar: Path = typer.Argument(..., help="the root filesystem tar"),
                 force: bool = typer.Option(False, help="replace image NAME if it exists")):
    """Import a root filesystem tar (`docker export`, `podman export`) as an image."""
    with console.status(f"importing {tar}..."):
        _store().import_tar(name, tar, force=force)
    console.print(f"imported image [bold]{name}[/bold]")


@image_app.command("to-docker")
@reports_errors
def image_to_docker(name: str = typer.Argument(..., help="the process-runtime image"),
                    tag: Optional[str] = typer.Argument(None, help="default: NAME"),
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
def image_ls(all_: bool = typer.Option(False, "--all", help="also the Dockerfile builds' "
                                       "step images (build.*)")):
    """List images."""
    table = Table("name", "parent", "source")
    images = _store().list()
    shown = [im for im in images if all_ or not im.name.startswith(("build.", "verify."))]
    for im in shown:
        table.add_row(im.name, im.parent or "", im.source)
    console.print(table)
    if len(shown) < len(images):
        console.print(f"({len(images) - len(shown)} build-step images not shown: --all)")


@image_app.command("prune")
@reports_errors
def image_prune():
    """Remove the Dockerfile builds' step images that no named image or sandbox uses."""
    from tumbler.runtime.dockerfile_images import prune_build_cache
    rt = _runtime()
    removed = prune_build_cache(rt.images, in_use=lambda n: any(s.spec.image == n for s in rt.list()))
    console.print(f"removed {len(removed)} build-step images")


@image_app.command("rm")
@reports_errors
def image_rm(name: str = typer.Argument(..., help="the image to remove")):
    """Remove an image (not while a sandbox or a snapshot uses it)."""
    rt = _runtime()
    if not rt.images.exists(name):
        fail(f"no image {name!r}; `tumbler image ls` lists the images there are")
    rt.images.remove(name, in_use=lambda n: any(s.spec.image == n for s in rt.list()))
    console.print(f"removed image [bold]{name}[/bold]")


@image_app.command("build-file")
@reports_errors
def build_file(context: Path = typer.Argument(..., help="the build context (holds the Dockerfile)"),
               name: Optional[str] = typer.Option(None, "--name", "-t",
                                                  help="the image's name (default: the folder's)"),
               file: Optional[Path] = typer.Option(None, "--file", "-f", help="the Dockerfile "
                                                   "(default: CONTEXT/Dockerfile)"),
               build_arg: list[str] = typer.Option([], help="ARG value, NAME=VALUE (repeatable)"),
               base: list[str] = typer.Option([], help="map a FROM name to a local image, "
                                              "NAME=IMAGE (repeatable), e.g. alpine=busybox"),
               backend: str = typer.Option("process", help="process (our builder) or docker "
                                           "(the engine's build)"),
               no_cache: bool = typer.Option(False, help="run every step again"),
               network: str = typer.Option("host", help="the RUN steps' network: host or none"),
               target: Optional[str] = typer.Option(None, help="build up to this stage "
                                                    "(FROM ... AS TARGET)"),
               engine: Optional[str] = typer.Option(None, help="engine URL (docker backend)")):
    """Build an image from a Dockerfile: FROM a local image (debian, ubuntu and python map to the
    local debian images), RUN, COPY, ADD, ENV, WORKDIR, USER, ARG, stages (FROM ... AS x,
    COPY --from=x); each step cached."""
    from tumbler.runtime.dockerfile_images import BaseImage
    name = name or context.resolve().name.lower()
    args = pairs(build_arg, "--build-arg")
    base_map = {k: BaseImage(v) for k, v in pairs(base, "--base").items()}
    if backend == "docker":
        _engine_build(context, name, file, args, base_map, engine, target)
    elif backend == "process":
        _process_build(context, name, file, args, base_map, no_cache, network, target)
    else:
        raise InvalidRequest(f"--backend {backend!r}: use process or docker")


def _process_build(context, name, file, args, base_map, no_cache, network, target) -> None:
    from tumbler.runtime.dockerfile_images import build_dockerfile
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[line]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(f"building {name}", total=None, line="")

        def on_event(kind: str, n: int, total: int, text: str) -> None:
            if kind == "output":
                progress.update(bar, line=text[:70])
                return
            progress.update(bar, total=total, completed=n - (kind == "step"), line="")
            if kind in ("step", "cached"):
                console.print(f"step {n}/{total}{' (cached)' if kind == 'cached' else ''}: {text}")
        result = build_dockerfile(context, name=name, dockerfile=file, build_args=args,
                                  base_map=base_map, no_cache=no_cache, network=network,
                                  target=target, on_event=on_event)
    console.print(f"built image [bold]{result.image}[/bold]: {result.steps} steps, "
                  f"{result.cached} cached, {result.seconds:.1f} s")


def _engine_build(context, name, file, args, base_map, engine, target) -> None:
    from tumbler.runtime.engine import connect
    from tumbler.runtime.engine_builds import build_with_engine
    with console.status(f"building {name} in the container engine...") as status:
        tag = build_with_engine(connect(engine), _store(), context, name, dockerfile=file,
                                build_args=args, base_map=base_map, target=target,
                                on_output=lambda line: status.update(f"{name}: {line[:100]}"))
    console.print(f"engine image [bold]{tag}[/bold] built from {context}")
