"""`tumbler image build-file`: an image from a Dockerfile, on either backend, with progress."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tumbler.cli_errors import reports_errors
from tumbler.errors import InvalidRequest

console = Console()


def pairs(values: list[str], what: str) -> dict[str, str]:
    """["K=V", ...] as a dict; a word without '=' is a clear error."""
    out = {}
    for v in values:
        key, eq, value = v.partition("=")
        if not eq or not key:
            raise InvalidRequest(f"{what} {v!r}: write it as NAME=VALUE")
        out[key] = value
    return out


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
               engine: Optional[str] = typer.Option(None, help="engine URL (docker backend)")):
    """Build an image from a Dockerfile: FROM a local image (debian, ubuntu and python map to the
    local debian images), RUN, COPY, ADD, ENV, WORKDIR, USER, ARG; each step cached."""
    from tumbler.runtime.dockerfile_images import BaseImage
    name = name or context.resolve().name.lower()
    args = pairs(build_arg, "--build-arg")
    base_map = {k: BaseImage(v) for k, v in pairs(base, "--base").items()}
    if backend == "docker":
        _engine_build(context, name, file, args, base_map, engine)
    elif backend == "process":
        _process_build(context, name, file, args, base_map, no_cache, network)
    else:
        raise InvalidRequest(f"--backend {backend!r}: use process or docker")


def _process_build(context, name, file, args, base_map, no_cache, network) -> None:
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
                                  on_event=on_event)
    console.print(f"built image [bold]{result.image}[/bold]: {result.steps} steps, "
                  f"{result.cached} cached, {result.seconds:.1f} s")


def _engine_build(context, name, file, args, base_map, engine) -> None:
    from tumbler.runtime.engine import connect
    from tumbler.runtime.engine_builds import build_with_engine
    from tumbler.runtime.images import ImageStore
    with console.status(f"building {name} in the container engine...") as status:
        tag = build_with_engine(connect(engine), ImageStore(), context, name, dockerfile=file,
                                build_args=args, base_map=base_map,
                                on_output=lambda line: status.update(f"{name}: {line[:100]}"))
    console.print(f"engine image [bold]{tag}[/bold] built from {context}")
