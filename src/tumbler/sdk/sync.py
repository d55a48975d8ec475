"""The synchronous SDK: `Client`, `Sandbox`, `Session`, `SandboxGroup`, on httpx.Client.

    from tumbler import Sandbox
    with Sandbox(image="debian", url="http://127.0.0.1:8040") as sb:
        sb.run("cd /tmp && export X=1")
        print(sb.run("echo $X $PWD").output)     # "1 /tmp"
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import httpx

from tumbler import wire
from tumbler.archives import extract_tar, tar_directory
from tumbler.errors import CommandTimeout, InvalidRequest, ServerUnreachable
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.spec import SandboxStats
from tumbler.sdk import core
from tumbler.sdk.transport import TumblerTransport

DEFAULT_TIMEOUT_S = wire.DEFAULT_TIMEOUT_S


class Client:
    """A connection pool to one server. Thread-safe; share it between sandboxes."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 retries: int = core.RETRIES, max_connections: int = 100):
        self.url = (url or core.default_url()).rstrip("/")
        token = token or core.default_token()
        self.token = token   # for clients of the same server made from this one (the model bridge)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._transport = TumblerTransport(max_idle=max_connections)
        self._http = httpx.Client(base_url=self.url, headers=headers, transport=self._transport)
        self._builder = core.RequestBuilder(self.url, token)

    def send(self, call: core.Call):
        """Make the request (retrying connection failures only) and read its reply."""
        head, body, host, port = self._builder.raw(call)
        for attempt in range(self.retries + 1):
            try:
                # Straight to the transport, as bytes: no cookies, redirects or hooks to run
                # (see core), nor httpx's Request and Response to build (see transport.fetch).
                status, content = self._transport.fetch(head, body, host, port, call.timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise ServerUnreachable(f"cannot reach the server at {self.url}: {exc}") from None
                time.sleep(core.backoff_s(attempt))
                continue
            except httpx.TimeoutException:
                raise CommandTimeout(f"no reply to {call.method} {call.path} within {call.timeout} s") from None
            except httpx.TransportError as exc:
                # The request may have reached the server: never resend it.
                raise ServerUnreachable(f"connection to {self.url} failed mid-request: {exc}") from None
            return core.finish(call, core.Reply(status, content))

    def stream_run(self, call: core.Call, on_output: Callable[[bytes], None]) -> CommandResult:
        body, headers = call.body_and_headers()
        parser, output = core.SSEParser(), []
        try:
            with self._http.stream(call.method, call.path, content=body, headers=headers,
                                   timeout=call.timeout) as resp:
                if resp.status_code >= 400:
                    raise core.error_for(core.Reply(resp.status_code, resp.read()))
                for chunk in resp.iter_raw():
                    for event, data in parser.feed(chunk):
                        result = core.stream_event(event, data, on_output, output)
                        if result is not None:
                            return result
        except httpx.TimeoutException:
            raise CommandTimeout(f"no reply to {call.path} within {call.timeout} s") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"connection to {self.url} failed mid-stream: {exc}") from None
        raise ServerUnreachable("the server ended the stream without a result")

    def create(self, image: str = "debian", **kwargs) -> "Sandbox":
        """Create and start a sandbox (arguments as Sandbox)."""
        return Sandbox(image, client=self, **kwargs)

    def get(self, sandbox_id: str) -> "Sandbox":
        return Sandbox.attach(sandbox_id, client=self)

    def list(self, state: str | None = None, labels: dict[str, str] | None = None) -> list[wire.SandboxOut]:
        return self.send(core.list_sandboxes(state, labels))

    def pools(self) -> list[wire.PoolOut]:
        """The server's warm pools: target size, ready, starting, handed out."""
        return self.send(core.list_pools())

    def runs(self) -> list[wire.TrainRunOut]:
        """The trainer's runs under the server's --runs-dir, newest first (last metrics, evals)."""
        return self.send(core.list_runs())

    def task_runs(self) -> list[wire.TaskRunOut]:
        """The task runner's results folders under the server's --runs-dir, newest first."""
        return self.send(core.list_task_runs())

    def nodes(self) -> list[wire.NodeOut]:
        """The machines the server places sandboxes on (cluster mode: each node host), with
        budget, what is admitted, sandboxes by state and whether the node is lost."""
        return self.send(core.list_nodes())

    def set_pool(self, name: str, size: int = 0, image: str = "debian", *,
                 per_node: int | None = None, **sandbox) -> wire.PoolOut:
        """Make or resize pool `name`: `size` started sandboxes of this spec (arguments as
        `create`: memory, cpus, pids, env...); a create with the same spec is then a handover.
        `per_node`: instead of `size`, this many on each live node (cluster mode: the pool
        follows the nodes that join and leave)."""
        req = core.create_request(image, **sandbox)
        return self.send(core.set_pool(name, size, req, per_node))

    def remove_pool(self, name: str) -> None:
        self.send(core.remove_pool(name))

    def call_many(self, calls: list) -> list:
        """Many ops of `tumbler.ops`, as (sandbox id, Op) pairs, in one request, run at once on
        the server: a list with each one's parsed result, or the TumblerError it raised."""
        if not calls:
            return []
        return self.send(core.batch(calls))

    def health(self) -> wire.Health:
        return self.send(core.health())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sandbox:
    """A sandbox on a Tumbler server: created and started on construction, removed on exit.

    The same methods as tumbler.LocalSandbox. ttl and max_lifetime are seconds.
    """

    def __init__(self, image: str = "debian", *, url: str | None = None, token: str | None = None,
                 client: Client | None = None, hostname: str = "sandbox",
                 env: dict[str, str] | None = None, cwd: str = "/root", network: str = "none",
                 memory: int | str = "512m", cpus: float = 1.0, pids: int = 512,
                 disk: int | str = "2g", inodes: int | None = None,
                 ttl: float | None = None, max_lifetime: float | None = None,
                 labels: dict[str, str] | None = None):
        req = core.create_request(image, hostname=hostname, env=env, cwd=cwd, network=network,
                                  memory=memory, cpus=cpus, pids=pids, disk=disk, inodes=inodes,
                                  ttl=ttl, max_lifetime=max_lifetime, labels=labels)
        self._owns_client = client is None
        self.client = client or Client(url, token)
        try:
            self.info: wire.SandboxOut = self.client.send(core.create(req))
        except BaseException:
            if self._owns_client:
                self.client.close()
            raise
        self.id = self.info.id
        self._removed = False

    @classmethod
    def attach(cls, sandbox_id: str, *, url: str | None = None, token: str | None = None,
               client: Client | None = None) -> "Sandbox":
        """The object for a sandbox that exists on the server."""
        owns = client is None
        client = client or Client(url, token)
        self = cls._of(client.send(core.get(sandbox_id)), client)
        self._owns_client = owns
        return self

    @classmethod
    def _of(cls, info: wire.SandboxOut, client: Client) -> "Sandbox":
        self = cls.__new__(cls)
        self._owns_client = False
        self.client = client
        self.info = info
        self.id = info.id
        self._removed = False
        return self

    # -- life cycle ------------------------------------------------------------------------

    def refresh(self) -> wire.SandboxOut:
        self.info = self.client.send(core.get(self.id))
        return self.info

    @property
    def state(self) -> str:
        return self.info.state

    def start(self) -> None:
        self.info = self.client.send(core.lifecycle(self.id, "start"))

    def stop(self) -> None:
        self.info = self.client.send(core.lifecycle(self.id, "stop"))

    def reset(self) -> None:
        """Back to the pristine image: processes, sessions and written files all gone."""
        self.info = self.client.send(core.lifecycle(self.id, "reset"))

    def pause(self) -> None:
        """Freeze every process (memory kept, no CPU used); calls are refused until resume()."""
        self.info = self.client.send(core.lifecycle(self.id, "pause"))

    def resume(self) -> None:
        self.info = self.client.send(core.lifecycle(self.id, "resume"))

    def fork(self, count: int, *, labels: dict[str, str] | None = None) -> list["Sandbox"]:
        """`count` new running sandboxes with copies of this one's files (not its processes),
        on this one's client; this one keeps its state. All are made, or none."""
        return [Sandbox._of(info, self.client)
                for info in self.client.send(core.fork(self.id, count, labels))]

    def snapshot(self, image: str) -> str:
        return self.client.send(core.snapshot(self.id, image))

    def stats(self) -> SandboxStats:
        return self.client.send(core.stats(self.id))

    def remove(self) -> None:
        if not self._removed:
            self.client.send(core.remove(self.id))
            self._removed = True
        if self._owns_client:
            self.client.close()

    close = remove

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, image={self.info.image!r}, state={self.info.state})"

    # -- shell -----------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
            max_output: int | None = None,
            on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        """Run `command` in the default bash session (state persists between calls)."""
        return self._run(None, command, timeout, max_output, on_output)

    def session(self, name: str, *, env: dict[str, str] | None = None, cwd: str | None = None,
                create: bool = True) -> "Session":
        """A persistent bash session; `create=False` attaches to one that exists."""
        if create:
            self.client.send(core.create_session(self.id, name, env, cwd))
        return Session(self, name)

    def sessions(self) -> list[dict]:
        return self.client.send(core.list_sessions(self.id))

    def history(self, session: str = "default") -> list[wire.HistoryEntry]:
        """The session's last 20 commands run through the server, oldest first, each with the
        last 4 KiB of its output (base64 in `output_tail_b64`); gone at stop and reset."""
        return self.client.send(core.session_history(self.id, session))

    def _run(self, session, command, timeout, max_output, on_output) -> CommandResult:
        call = core.run(self.id, session, command, timeout, max_output, stream=on_output is not None)
        if on_output is None:
            return self.client.send(call)
        return self.client.stream_run(call, on_output)

    def exec(self, command: str | list[str], *, env: dict[str, str] | None = None,
             cwd: str | None = None, stdin: bytes | str = b"", timeout: float = DEFAULT_TIMEOUT_S,
             max_output: int | None = None) -> ExecResult:
        """Run one process (argv list, or a string for /bin/sh -c) and wait for it."""
        return self.client.send(core.exec_(self.id, command, env, cwd, stdin, timeout, max_output))

    # -- files -----------------------------------------------------------------------------

    def read_bytes(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return self.client.send(core.read_bytes(self.id, path, offset, length))

    def read_file(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def write_file(self, path: str, data: str | bytes, *, mode: int | None = None,
                   append: bool = False) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.client.send(core.write_bytes(self.id, path, body, mode, append))

    def stat(self, path: str) -> FileInfo:
        return self.client.send(core.stat(self.id, path))

    def list_dir(self, path: str) -> list[FileInfo]:
        return self.client.send(core.list_dir(self.id, path))

    def remove_file(self, path: str, *, recursive: bool = False) -> None:
        self.client.send(core.remove_file(self.id, path, recursive))

    def chmod(self, path: str, mode: int) -> None:
        self.client.send(core.chmod(self.id, path, mode))

    def mkdir(self, path: str) -> None:
        self.client.send(core.mkdir(self.id, path))

    def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory tree to `remote` in the sandbox."""
        local = Path(local)
        if not local.exists():
            raise InvalidRequest(f"no such local file or directory: {local}")
        if local.is_file():
            self.write_file(remote, local.read_bytes(), mode=local.stat().st_mode & 0o777)
            return
        self.client.send(core.upload_tar(self.id, remote, tar_directory(local)))

    def download(self, remote: str, local: str | Path, *, links: bool = False) -> None:
        """Copy a sandbox file or directory tree to `local` on the host.

        The tree is unpacked as hostile input (`tumbler.archives`): files and directories only,
        symlinks and hard links too with `links=True` when they stay inside `local`."""
        local = Path(local)
        if self.stat(remote).type != "dir":
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.read_bytes(remote))
            return
        # The archive comes from inside the sandbox: hostile input (see tumbler.archives).
        extract_tar(self.client.send(core.download_tar(self.id, remote)), local, links=links)

    # -- processes -------------------------------------------------------------------------

    # -- the sandbox handle ----------------------------------------------------------------

    def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = core.OP_TIMEOUT_S, on_event=None) -> tuple[dict, bytes]:
        """One agent op as it is (what `HostedEnv` and the model bridge send): (result, body).

        The same call as `LocalSandbox.call`; events (streamed output) are not relayed here."""
        if on_event is not None:
            raise InvalidRequest("on_event is not relayed over HTTP; use run(on_output=...)")
        return self.client.send(core.op(self.id, op, args, body, timeout))

    def do(self, op):
        """Send one op of `tumbler.ops` and parse its reply."""
        return op.parse(*(self.call(op.name, op.args, op.body, timeout=op.timeout)))

    def processes(self) -> list[ProcessInfo]:
        return self.client.send(core.processes(self.id))

    def kill(self, pid: int, signal: int | str = "TERM") -> None:
        self.client.send(core.kill(self.id, pid, signal))


class Session:
    """A persistent bash session in a remote sandbox."""

    def __init__(self, sandbox: Sandbox, name: str):
        self.sandbox = sandbox
        self.name = name

    def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
            max_output: int | None = None,
            on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        """Run `command`; on timeout it is interrupted (the session lives on) and the result
        says timed_out. `on_output` receives output chunks while it runs (streamed)."""
        return self.sandbox._run(self.name, command, timeout, max_output, on_output)

    def input(self, data: str | bytes) -> None:
        """Type `data` into the running command (e.g. the answer to `read x`, with its newline)."""
        self.sandbox.client.send(core.session_input(self.sandbox.id, self.name, data))

    def interrupt(self) -> bool:
        return self.sandbox.client.send(core.interrupt(self.sandbox.id, self.name))

    def close(self) -> None:
        self.sandbox.client.send(core.close_session(self.sandbox.id, self.name))

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SandboxGroup:
    """N sandboxes created and removed concurrently over one client.

        with SandboxGroup(8, image="debian") as group:
            outputs = [sb.run("hostname").output for sb in group]
    """

    def __init__(self, count: int, image: str = "debian", *, url: str | None = None,
                 token: str | None = None, client: Client | None = None, concurrency: int = 32,
                 **kwargs):
        self._owns_client = client is None
        self.client = client or Client(url, token)
        self.sandboxes: list[Sandbox] = []
        with ThreadPoolExecutor(min(concurrency, max(count, 1))) as pool:
            futures = [pool.submit(Sandbox, image, client=self.client, **kwargs) for _ in range(count)]
            errors = []
            for future in futures:
                try:
                    self.sandboxes.append(future.result())
                except Exception as exc:
                    errors.append(exc)
        if errors:
            self.remove()
            raise errors[0]

    @classmethod
    def fork(cls, sandbox: Sandbox, count: int, *,
             labels: dict[str, str] | None = None) -> "SandboxGroup":
        """A group of `count` forks of `sandbox` (its files; e.g. the members of a GRPO group
        started from one prepared state), on its client. Removing the group leaves `sandbox`."""
        self = cls.__new__(cls)
        self._owns_client = False
        self.client = sandbox.client
        self.sandboxes = sandbox.fork(count, labels=labels)
        return self

    def remove(self) -> None:
        """Remove every sandbox of the group (concurrently)."""
        with ThreadPoolExecutor(max(1, min(32, len(self.sandboxes)))) as pool:
            list(pool.map(lambda sb: sb.remove(), self.sandboxes))
        if self._owns_client:
            self.client.close()

    def stop(self) -> None:
        with ThreadPoolExecutor(max(1, min(32, len(self.sandboxes)))) as pool:
            list(pool.map(lambda sb: sb.stop(), self.sandboxes))

    def __iter__(self) -> Iterator[Sandbox]:
        return iter(self.sandboxes)

    def __len__(self) -> int:
        return len(self.sandboxes)

    def __getitem__(self, i: int) -> Sandbox:
        return self.sandboxes[i]

    def __enter__(self) -> "SandboxGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
