"""`tumbler sandbox ...` and `tumbler pool ...`: a Tumbler server's sandboxes and warm pools,
through the SDK (TUMBLER_URL, TUMBLER_TOKEN)."""
from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tumbler.cli import options as o
from tumbler.cli.errors import err, reports_errors
from tumbler.cli.options import TOKEN, URL
from tumbler.errors import TumblerError

sandbox_app = typer.Typer(no_args_is_help=True, help="Sandboxes on a Tumbler server (tumbler serve).")
pool_app = typer.Typer(no_args_is_help=True, help="Warm pools on a Tumbler server: create is a handover.")
console = Console()
POOL_NAME = typer.Argument(..., help="the pool's name")


def _client(url: str | None, token: str | None):
    from tumbler.sdk import Client
    return Client(url, token)


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=True)


@sandbox_app.command("create")
@reports_errors
def create(image: str = o.IMAGE, memory: str = o.MEMORY, cpus: float = o.CPUS, pids: int = o.PIDS,
           disk: str = o.DISK, env: list[str] = o.ENV, cwd: str = o.CWD, hostname: str = o.HOSTNAME,
           network: str = o.NETWORK, egress: list[str] = o.EGRESS,
           ttl: Optional[float] = typer.Option(None, help="idle seconds before the server "
                                               "removes it (default: the server's --ttl)"),
           max_lifetime: Optional[float] = typer.Option(
               None, help="seconds after creation before the server removes it, idle or not "
                          "(default: the server's --max-lifetime)"),
           label: list[str] = typer.Option([], help="KEY=VALUE, repeatable"),
           count: int = typer.Option(1, help="how many"), url: Optional[str] = URL,
           token: Optional[str] = TOKEN):
    """Create and start sandboxes; prints their ids."""
    from concurrent.futures import ThreadPoolExecutor
    from pydantic import ValidationError
    from tumbler import wire
    from tumbler.errors import InvalidRequest
    from tumbler.sdk import core
    try:
        req = wire.CreateSandboxRequest(
            image=image, env=o.pairs(env, "--env"), cwd=cwd, hostname=hostname, network=network,
            egress=egress,
            limits={"memory": memory, "cpus": cpus, "pids": pids, "disk": disk}, ttl_s=ttl,
            max_lifetime_s=max_lifetime, labels=o.pairs(label, "--label"))
    except ValidationError as exc:
        raise InvalidRequest(_first_error(exc)) from None
    with _client(url, token) as client, _progress() as progress:
        progress.add_task(f"creating {count} sandbox(es) from {image}...")
        with ThreadPoolExecutor(max(1, min(count, 32))) as pool:
            futures = [pool.submit(client.send, core.create(req)) for _ in range(count)]
        made, errors = [], []
        for future in futures:
            try:
                made.append(future.result().id)
            except Exception as exc:
                errors.append(exc)
        if errors:  # all or none, as SandboxGroup
            for sid in made:
                try:
                    client.send(core.remove(sid))
                except TumblerError:
                    pass
            raise errors[0]
    for sid in made:
        console.print(sid)


def _first_error(exc) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', exc)}" if where else str(first.get("msg", exc))


@sandbox_app.command("ls")
@reports_errors
def ls(state: Optional[str] = typer.Option(None, help="only sandboxes in this state: created, "
                                             "running, stopped or error"),
       label: list[str] = typer.Option([], help="only sandboxes with this KEY=VALUE label "
                                       "(repeatable: all must match)"),
       url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """List sandboxes."""
    labels = o.pairs(label, "--label")
    with _client(url, token) as client:
        rows = client.list(state, labels)
    table = Table("id", "image", "state", "labels", "error")
    for s in rows:
        table.add_row(s.id, s.image, s.state, ",".join(f"{k}={v}" for k, v in s.labels.items()),
                      s.error or "")
    console.print(table)


@sandbox_app.command("exec")
@reports_errors
def exec_(sandbox_id: str = o.SANDBOX_ID,
          command: str = typer.Argument(..., help="a bash command line"),
          timeout: float = o.EXEC_TIMEOUT, url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Run a command in the sandbox's default session, streaming output; exits with its status."""
    from tumbler.sdk import Sandbox
    with _client(url, token) as client:
        sb = Sandbox.attach(sandbox_id, client=client)
        result = sb.run(command, timeout=timeout, on_output=_write)
    if result.timed_out:
        err.print(f"[yellow]timed out after {timeout} s[/yellow]")
    raise typer.Exit(result.exit_code if result.exit_code is not None else 124)


@sandbox_app.command("shell")
@reports_errors
def shell(sandbox_id: str = o.SANDBOX_ID, url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """A terminal in the sandbox: a login bash on a PTY (full-screen programs such as top or
    vim, resizes) until it exits. With stdin not a terminal: a line-by-line bash session of
    its own instead (Ctrl-C interrupts, Ctrl-D leaves)."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        from tumbler.sdk import core
        from tumbler.sdk.terminal import attach_tty
        raise typer.Exit(attach_tty(url or core.default_url(), token or core.default_token(),
                                    sandbox_id))
    from tumbler.sdk import Sandbox
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    name = f"shell-{uuid.uuid4().hex[:8]}"
    with _client(url, token) as client:
        session = Sandbox.attach(sandbox_id, client=client).session(name)
        try:
            _repl(session, sandbox_id)
        finally:
            session.close()


@sandbox_app.command("forward")
@reports_errors
def forward(sandbox_id: str = o.SANDBOX_ID,
            port: int = typer.Argument(..., help="the port inside the sandbox"),
            local_port: int = typer.Option(0, "--local-port", help="the port here (0: any free one)"),
            url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Serve a port inside the sandbox on 127.0.0.1 here, until Ctrl-C (TCP over WebSocket)."""
    import time
    from tumbler.sdk import core
    from tumbler.sdk.forward import Forward
    with Forward(url or core.default_url(), token or core.default_token(), sandbox_id, port,
                 local_port) as fwd:
        err.print(f"127.0.0.1:{fwd.port} -> port {port} in sandbox {sandbox_id} (Ctrl-C ends)")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def _repl(session, sandbox_id: str) -> None:
    import threading
    while True:
        try:
            cwd = session.run("pwd", timeout=10).output.strip()
            line = input(f"{sandbox_id}:{cwd}# ")
        except EOFError:
            err.print()
            return
        except KeyboardInterrupt:
            err.print()
            continue
        if line.strip() in ("exit", "logout"):
            return
        box: dict = {}
        runner = threading.Thread(target=lambda: box.setdefault(
            "result", _run_catching(session, line)), daemon=True)
        runner.start()
        while runner.is_alive():
            try:
                runner.join(0.1)
            except KeyboardInterrupt:
                session.interrupt()
        if isinstance(box.get("result"), TumblerError):
            err.print(f"[red]error:[/red] {box['result'].message}")


def _run_catching(session, line: str):
    try:
        return session.run(line, timeout=24 * 3600, on_output=_write)
    except TumblerError as exc:
        return exc


def _write(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()


@sandbox_app.command("cp")
@reports_errors
def cp(src: str = typer.Argument(..., help="a local path, or ID:/path in a sandbox"),
       dst: str = typer.Argument(..., help="a local path, or ID:/path in a sandbox"),
       url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Copy files or trees: `cp ./dir ID:/work` uploads, `cp ID:/work ./dir` downloads."""
    from tumbler.sdk import Sandbox
    src_remote, dst_remote = _remote(src), _remote(dst)
    if (src_remote is None) == (dst_remote is None):
        err.print("[red]error:[/red] exactly one of SRC and DST must be ID:/path")
        raise typer.Exit(2)
    with _client(url, token) as client, _progress() as progress:
        sid, path = src_remote or dst_remote
        sb = Sandbox.attach(sid, client=client)
        progress.add_task(f"copying {src} to {dst}...")
        if dst_remote:
            sb.upload(Path(src), path)
        else:
            sb.download(path, Path(dst))


def _remote(arg: str) -> tuple[str, str] | None:
    sid, sep, path = arg.partition(":")
    if sep and sid.isalnum() and path.startswith("/"):
        return sid, path
    return None


@sandbox_app.command("rm")
@reports_errors
def rm(sandbox_ids: list[str] = o.SANDBOX_IDS, url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Remove sandboxes."""
    from tumbler.sdk import core
    with _client(url, token) as client:
        for sid in sandbox_ids:
            client.send(core.remove(sid))


def _life_cycle(op: str, doc: str) -> None:
    """`tumbler sandbox OP ID`: one life-cycle call to the server."""
    @sandbox_app.command(op, help=doc)
    @reports_errors
    def command(sandbox_id: str = o.SANDBOX_ID, url: Optional[str] = URL,
                token: Optional[str] = TOKEN):
        from tumbler.sdk import core
        with _client(url, token) as client:
            client.send(core.lifecycle(sandbox_id, op))


_life_cycle("reset", "Reset a sandbox to its pristine image (its files are lost; it runs after).")
_life_cycle("stop", "Stop a sandbox: its processes end, its files are kept (`tumbler sandbox "
                    "start` resumes).")
_life_cycle("start", "Start a stopped sandbox again, with the files it had (`reset` would wipe them).")


@sandbox_app.command("snapshot")
@reports_errors
def snapshot(sandbox_id: str = o.SANDBOX_ID, image: str = o.NEW_IMAGE, url: Optional[str] = URL,
             token: Optional[str] = TOKEN):
    """Save a sandbox's files as a new image."""
    from tumbler.sdk import core
    with _client(url, token) as client:
        client.send(core.snapshot(sandbox_id, image))
    console.print(f"saved image [bold]{image}[/bold]")


@pool_app.command("ls")
@reports_errors
def pool_ls(url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """List warm pools: target size, ready, starting, handed out, last error."""
    with _client(url, token) as client:
        pools = client.pools()
    table = Table("name", "image", "size", "ready", "starting", "handed out", "last error")
    for p in pools:
        table.add_row(p.name, p.image, str(p.size), str(p.ready), str(p.starting),
                      str(p.handed_out), p.last_error or "")
    console.print(table)


def _kept(what: str, new: str, note: str = "") -> typer.models.OptionInfo:
    """A pool option: its default for a new pool; an existing pool keeps its own unless given."""
    return typer.Option(None, help=f"{what}; a new pool: {new}; an existing pool: kept unless "
                                   f"given{note}")


@pool_app.command("resize")
@reports_errors
def pool_resize(name: str = POOL_NAME,
                size: int = typer.Argument(..., help="sandboxes to keep ready (0 empties it)"),
                image: Optional[str] = _kept("image of the pooled sandboxes", "debian",
                                             " (a change replaces its sandboxes)"),
                memory: Optional[str] = _kept("memory limit, e.g. 512m", "512m"),
                cpus: Optional[float] = _kept("CPU limit in cores", "1"),
                pids: Optional[int] = _kept("most processes", "512"),
                url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Make pool NAME, or change its size (its spec stays as it is unless an option changes it);
    a create with the pool's spec is then a handover."""
    from tumbler import wire
    from tumbler.sdk import core
    with _client(url, token) as client:
        current = next((p for p in client.pools() if p.name == name), None)
        if current is None:
            req = core.create_request(image or "debian", memory=memory or "512m",
                                      cpus=1.0 if cpus is None else cpus,
                                      pids=512 if pids is None else pids)
        else:
            spec = current.spec
            limits = spec.limits.model_dump()
            limits.update({k: v for k, v in (("memory", memory), ("cpus", cpus), ("pids", pids))
                           if v is not None})
            req = wire.CreateSandboxRequest(**{**spec.model_dump(exclude={"labels"}),
                                               "image": image or spec.image, "limits": limits})
        pool = client.send(core.set_pool(name, size, req))
    console.print(f"pool [bold]{pool.name}[/bold] ({pool.image}): {pool.ready}/{pool.size} ready, "
                  f"{pool.starting} starting")


@pool_app.command("rm")
@reports_errors
def pool_rm(name: str = POOL_NAME, url: Optional[str] = URL, token: Optional[str] = TOKEN):
    """Remove a pool and the sandboxes waiting in it."""
    with _client(url, token) as client:
        client.remove_pool(name)
