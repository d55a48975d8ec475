"""The asyncio SDK: `AsyncClient`, `AsyncSandbox`, `AsyncSession`, `AsyncSandboxGroup`.

    async with AsyncSandbox(image="debian") as sb:      # created on enter, removed on exit
        print((await sb.run("echo hi")).output)
    sb = await AsyncSandbox.create(image="debian")       # or explicitly
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

import httpx

from tumbler import wire
from tumbler.errors import CommandTimeout, InvalidRequest, ServerUnreachable
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.spec import SandboxStats
from tumbler.sdk import core
from tumbler.sdk.runs import RunBatcher
from tumbler.sdk.runstream import RunStream
from tumbler.sdk.transport import AsyncTumblerTransport
from tumbler.archives import extract_tar, tar_directory

DEFAULT_TIMEOUT_S = wire.DEFAULT_TIMEOUT_S


class AsyncClient:
    """A connection pool to one server, for one event loop; share it between sandboxes.

    `run_stream`: its sessions' commands go to the server on one long-lived request, each
    answered as it ends (`sdk.runstream`; its connection stays open until `close()`). `batch_runs`: without a stream (turned off, or a
    server or proxy that cannot carry one), commands its sessions start in the same turn of
    the loop go as one request (`sdk.runs`); both False sends each on its own."""

    def __init__(self, url: str | None = None, token: str | None = None, *,
                 retries: int = core.RETRIES, max_connections: int = 100, batch_runs: bool = True,
                 run_stream: bool = True):
        self.url = (url or core.default_url()).rstrip("/")
        token = token or core.default_token()
        self.token = token   # for clients of the same server made from this one (the model bridge)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._transport = AsyncTumblerTransport(max_idle=max_connections)
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=self._transport)
        self._builder = core.RequestBuilder(self.url, token)
        self._runs = RunBatcher(self) if batch_runs else None
        self._stream = RunStream(self) if run_stream else None

    async def send(self, call: core.Call):
        """Make the request (retrying connection failures only) and read its reply."""
        if call.run_of is not None:
            stream = self._stream
            if stream is not None and stream.enabled:
                return await stream.run(call)
            return await self._send_without_stream(call)
        return await self._send_now(call)

    async def _send_without_stream(self, call: core.Call):
        if self._runs is not None:
            return await self._runs.run(call)
        return await self._send_now(call)

    async def _send_now(self, call: core.Call):
        status, content = await self._fetch(call)
        return core.finish(call, core.Reply(status, content))

    async def _fetch(self, call: core.Call, on_chunk=None) -> tuple[int, bytes]:
        """(status, content) of the call's request, connection failures retried, transport
        errors said as TumblerErrors; `on_chunk` as transport.fetch's."""
        head, body, host, port = self._builder.raw(call)
        for attempt in range(self.retries + 1):
            try:
                # Straight to the transport, as bytes: no cookies, redirects or hooks to run
                # (see core), nor httpx's Request and Response to build (see transport.fetch).
                return await self._transport.fetch(head, body, host, port, call.timeout, on_chunk)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == self.retries:
                    raise ServerUnreachable(f"cannot reach the server at {self.url}: {exc}") from None
                await asyncio.sleep(core.backoff_s(attempt))
                continue
            except httpx.TimeoutException:
                raise CommandTimeout(f"no reply to {call.method} {call.path} within {call.timeout} s") from None
            except httpx.TransportError as exc:
                raise ServerUnreachable(f"connection to {self.url} failed mid-request: {exc}") from None

    async def stream_run(self, call: core.Call, on_output: Callable[[bytes], None]) -> CommandResult:
        body, headers = call.body_and_headers()
        parser, output = core.SSEParser(), []
        try:
            async with self._http.stream(call.method, call.path, content=body, headers=headers,
                                         timeout=call.timeout) as resp:
                if resp.status_code >= 400:
                    raise core.error_for(core.Reply(resp.status_code, await resp.aread()))
                async for chunk in resp.aiter_raw():
                    for event, data in parser.feed(chunk):
                        result = core.stream_event(event, data, on_output, output)
                        if result is not None:
                            return result
        except httpx.TimeoutException:
            raise CommandTimeout(f"no reply to {call.path} within {call.timeout} s") from None
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"connection to {self.url} failed mid-stream: {exc}") from None
        raise ServerUnreachable("the server ended the stream without a result")

    async def create(self, image: str = "debian", **kwargs) -> "AsyncSandbox":
        return await AsyncSandbox.create(image, client=self, **kwargs)

    async def get(self, sandbox_id: str) -> "AsyncSandbox":
        return await AsyncSandbox.attach(sandbox_id, client=self)

    async def list(self, state: str | None = None,
                   labels: dict[str, str] | None = None) -> list[wire.SandboxOut]:
        return await self.send(core.list_sandboxes(state, labels))

    async def pools(self) -> list[wire.PoolOut]:
        """The server's warm pools: target size, ready, starting, handed out."""
        return await self.send(core.list_pools())

    async def runs(self) -> list[wire.TrainRunOut]:
        """The trainer's runs under the server's --runs-dir, newest first (last metrics, evals)."""
        return await self.send(core.list_runs())

    async def task_runs(self) -> list[wire.TaskRunOut]:
        """The task runner's results folders under the server's --runs-dir, newest first."""
        return await self.send(core.list_task_runs())

    async def nodes(self) -> list[wire.NodeOut]:
        """The machines the server places sandboxes on (cluster mode: each node host), with
        budget, what is admitted, sandboxes by state and whether the node is lost."""
        return await self.send(core.list_nodes())

    async def set_pool(self, name: str, size: int = 0, image: str = "debian", *,
                 per_node: int | None = None, **sandbox) -> wire.PoolOut:
        """Make or resize pool `name`: `size` started sandboxes of this spec (arguments as
        `create`: memory, cpus, pids, env...); a create with the same spec is then a handover.
        `per_node`: instead of `size`, this many on each live node (cluster mode: the pool
        follows the nodes that join and leave)."""
        req = core.create_request(image, **sandbox)
        return await self.send(core.set_pool(name, size, req, per_node))

    async def remove_pool(self, name: str) -> None:
        await self.send(core.remove_pool(name))

    async def call_many(self, calls: list) -> list:
        """Many ops of `tumbler.ops`, as (sandbox id, Op) pairs, in one request, run at once on
        the server: a list with each one's parsed result, or the TumblerError it raised."""
        if not calls:
            return []
        return await self.send(core.batch(calls))

    async def health(self) -> wire.Health:
        return await self.send(core.health())

    async def close(self) -> None:
        if self._stream is not None:
            await self._stream.close()
        if self._runs is not None:
            await self._runs.close()
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class AsyncSandbox:
    """A sandbox on a Tumbler server, async. The same methods as Sandbox, awaited."""

    def __init__(self, image: str = "debian", *, url: str | None = None, token: str | None = None,
                 client: AsyncClient | None = None, **kwargs):
        self._request = core.create_request(image, **kwargs)
        self._owns_client = client is None
        self.client = client or AsyncClient(url, token)
        self.id: str | None = None
        self.info: wire.SandboxOut | None = None
        self._removed = False

    @classmethod
    async def create(cls, image: str = "debian", **kwargs) -> "AsyncSandbox":
        """Create and start a sandbox (arguments as Sandbox)."""
        self = cls(image, **kwargs)
        await self._create()
        return self

    @classmethod
    async def attach(cls, sandbox_id: str, *, url: str | None = None, token: str | None = None,
                     client: AsyncClient | None = None) -> "AsyncSandbox":
        owns = client is None
        client = client or AsyncClient(url, token)
        self = cls._of(await client.send(core.get(sandbox_id)), client)
        self._owns_client = owns
        return self

    @classmethod
    def _of(cls, info: wire.SandboxOut, client: AsyncClient) -> "AsyncSandbox":
        self = cls.__new__(cls)
        self._request = None
        self._owns_client = False
        self.client = client
        self.info = info
        self.id = info.id
        self._removed = False
        return self

    async def _create(self) -> None:
        try:
            self.info = await self.client.send(core.create(self._request))
        except BaseException:
            if self._owns_client:
                await self.client.close()
            raise
        self.id = self.info.id

    # -- life cycle ------------------------------------------------------------------------

    async def refresh(self) -> wire.SandboxOut:
        self.info = await self.client.send(core.get(self.id))
        return self.info

    @property
    def state(self) -> str:
        return self.info.state

    async def start(self) -> None:
        self.info = await self.client.send(core.lifecycle(self.id, "start"))

    async def stop(self) -> None:
        self.info = await self.client.send(core.lifecycle(self.id, "stop"))

    async def reset(self) -> None:
        self.info = await self.client.send(core.lifecycle(self.id, "reset"))

    async def pause(self) -> None:
        """Freeze every process (memory kept, no CPU used); calls are refused until resume()."""
        self.info = await self.client.send(core.lifecycle(self.id, "pause"))

    async def resume(self) -> None:
        self.info = await self.client.send(core.lifecycle(self.id, "resume"))

    async def fork(self, count: int, *, labels: dict[str, str] | None = None) -> list["AsyncSandbox"]:
        """`count` new running sandboxes with copies of this one's files (not its processes)."""
        return [AsyncSandbox._of(info, self.client)
                for info in await self.client.send(core.fork(self.id, count, labels))]

    async def snapshot(self, image: str) -> str:
        return await self.client.send(core.snapshot(self.id, image))

    async def stats(self) -> SandboxStats:
        return await self.client.send(core.stats(self.id))

    async def remove(self) -> None:
        if not self._removed and self.id is not None:
            await self.client.send(core.remove(self.id))
            self._removed = True
        if self._owns_client:
            await self.client.close()

    close = remove

    async def __aenter__(self) -> "AsyncSandbox":
        if self.id is None:
            await self._create()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.remove()

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r})"

    # -- shell -----------------------------------------------------------------------------

    async def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                  max_output: int | None = None,
                  on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        return await self._run(None, command, timeout, max_output, on_output)

    async def session(self, name: str, *, env: dict[str, str] | None = None,
                      cwd: str | None = None, create: bool = True) -> "AsyncSession":
        if create:
            await self.client.send(core.create_session(self.id, name, env, cwd))
        return AsyncSession(self, name)

    async def sessions(self) -> list[dict]:
        return await self.client.send(core.list_sessions(self.id))

    async def history(self, session: str = "default") -> list[wire.HistoryEntry]:
        """The session's last 20 commands run through the server, oldest first, each with the
        last 4 KiB of its output (base64 in `output_tail_b64`); gone at stop and reset."""
        return await self.client.send(core.session_history(self.id, session))

    async def _run(self, session, command, timeout, max_output, on_output) -> CommandResult:
        call = core.run(self.id, session, command, timeout, max_output, stream=on_output is not None)
        if on_output is None:
            return await self.client.send(call)
        return await self.client.stream_run(call, on_output)

    async def exec(self, command: str | list[str], *, env: dict[str, str] | None = None,
                   cwd: str | None = None, stdin: bytes | str = b"",
                   timeout: float = DEFAULT_TIMEOUT_S, max_output: int | None = None) -> ExecResult:
        return await self.client.send(core.exec_(self.id, command, env, cwd, stdin, timeout, max_output))

    # -- files -----------------------------------------------------------------------------

    async def read_bytes(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return await self.client.send(core.read_bytes(self.id, path, offset, length))

    async def read_file(self, path: str) -> str:
        return (await self.read_bytes(path)).decode("utf-8", errors="replace")

    async def write_file(self, path: str, data: str | bytes, *, mode: int | None = None,
                         append: bool = False) -> None:
        body = data.encode() if isinstance(data, str) else data
        await self.client.send(core.write_bytes(self.id, path, body, mode, append))

    async def stat(self, path: str) -> FileInfo:
        return await self.client.send(core.stat(self.id, path))

    async def list_dir(self, path: str) -> list[FileInfo]:
        return await self.client.send(core.list_dir(self.id, path))

    async def remove_file(self, path: str, *, recursive: bool = False) -> None:
        await self.client.send(core.remove_file(self.id, path, recursive))

    async def chmod(self, path: str, mode: int) -> None:
        await self.client.send(core.chmod(self.id, path, mode))

    async def mkdir(self, path: str) -> None:
        await self.client.send(core.mkdir(self.id, path))

    async def upload(self, local: str | Path, remote: str) -> None:
        local = Path(local)
        if not local.exists():
            raise InvalidRequest(f"no such local file or directory: {local}")
        if local.is_file():
            await self.write_file(remote, local.read_bytes(), mode=local.stat().st_mode & 0o777)
            return
        data = await asyncio.to_thread(tar_directory, local)
        await self.client.send(core.upload_tar(self.id, remote, data))

    async def download(self, remote: str, local: str | Path, *, links: bool = False) -> None:
        """Copy a sandbox file or directory tree to `local` (as `Sandbox.download`)."""
        local = Path(local)
        if (await self.stat(remote)).type != "dir":
            data = await self.read_bytes(remote)
            local.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(local.write_bytes, data)
            return
        data = await self.client.send(core.download_tar(self.id, remote))
        await asyncio.to_thread(extract_tar, data, local, links=links)

    # -- processes -------------------------------------------------------------------------

    # -- the sandbox handle ----------------------------------------------------------------

    async def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = core.OP_TIMEOUT_S, on_event=None) -> tuple[dict, bytes]:
        """One agent op as it is (what `HostedEnv` and the model bridge send): (result, body).

        The same call as `LocalSandbox.call`; events (streamed output) are not relayed here."""
        if on_event is not None:
            raise InvalidRequest("on_event is not relayed over HTTP; use run(on_output=...)")
        return await self.client.send(core.op(self.id, op, args, body, timeout))

    async def do(self, op):
        """Send one op of `tumbler.ops` and parse its reply."""
        return op.parse(*(await self.call(op.name, op.args, op.body, timeout=op.timeout)))

    async def processes(self) -> list[ProcessInfo]:
        return await self.client.send(core.processes(self.id))

    async def kill(self, pid: int, signal: int | str = "TERM") -> None:
        await self.client.send(core.kill(self.id, pid, signal))


class AsyncSession:
    """A persistent bash session in a remote sandbox, async."""

    def __init__(self, sandbox: AsyncSandbox, name: str):
        self.sandbox = sandbox
        self.name = name

    async def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                  max_output: int | None = None,
                  on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        return await self.sandbox._run(self.name, command, timeout, max_output, on_output)

    async def input(self, data: str | bytes) -> None:
        await self.sandbox.client.send(core.session_input(self.sandbox.id, self.name, data))

    async def interrupt(self) -> bool:
        return await self.sandbox.client.send(core.interrupt(self.sandbox.id, self.name))

    async def close(self) -> None:
        await self.sandbox.client.send(core.close_session(self.sandbox.id, self.name))

    async def __aenter__(self) -> "AsyncSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


class AsyncSandboxGroup:
    """N sandboxes created and removed concurrently.

        async with AsyncSandboxGroup(8, image="debian") as group:
            results = await asyncio.gather(*(sb.run("hostname") for sb in group))
    """

    def __init__(self, count: int, image: str = "debian", *, url: str | None = None,
                 token: str | None = None, client: AsyncClient | None = None, **kwargs):
        self.count = count
        self._owns_client = client is None
        self.client = client or AsyncClient(url, token)
        self._args = (image, kwargs)
        self.sandboxes: list[AsyncSandbox] = []

    async def start(self) -> "AsyncSandboxGroup":
        """Create all `count` sandboxes at once; on any failure, remove those made and raise."""
        image, kwargs = self._args
        results = await asyncio.gather(
            *(AsyncSandbox.create(image, client=self.client, **kwargs) for _ in range(self.count)),
            return_exceptions=True)
        self.sandboxes = [r for r in results if isinstance(r, AsyncSandbox)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.remove()
            raise failures[0]
        return self

    @classmethod
    async def fork(cls, sandbox: AsyncSandbox, count: int, *,
                   labels: dict[str, str] | None = None) -> "AsyncSandboxGroup":
        """A group of `count` forks of `sandbox` (its files), on its client; already made, so
        `async with await AsyncSandboxGroup.fork(sb, 8) as group:` removes them on exit."""
        self = cls(count, client=sandbox.client)
        self.sandboxes = await sandbox.fork(count, labels=labels)
        return self

    async def remove(self) -> None:
        await asyncio.gather(*(sb.remove() for sb in self.sandboxes), return_exceptions=True)
        if self._owns_client:
            await self.client.close()

    async def stop(self) -> None:
        await asyncio.gather(*(sb.stop() for sb in self.sandboxes))

    def __iter__(self):
        return iter(self.sandboxes)

    def __len__(self) -> int:
        return len(self.sandboxes)

    def __getitem__(self, i: int) -> AsyncSandbox:
        return self.sandboxes[i]

    async def __aenter__(self) -> "AsyncSandboxGroup":
        return self if self.sandboxes else await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.remove()
