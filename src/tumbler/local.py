"""The Python API for sandboxes on this machine, with no server in between.

    with LocalSandbox(image="debian") as sb:
        sb.run("cd /tmp && export X=1")
        print(sb.run("echo $X $PWD").output)     # "1 /tmp"
        sb.write_file("/tmp/a.txt", "hello")
        with sb.session("build") as s:
            s.run("make", timeout=600)

The server wraps these same objects; the SDK offers the same methods over HTTP.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from tumbler.agentclient.blocking import AgentClient
from tumbler.archives import extract_tar, tar_directory
from tumbler.agentclient.errors import agent_errors
from tumbler.errors import InvalidRequest, from_kind
from tumbler import ops
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.base import Runtime
from tumbler.runtime.owners import OWNER_LABEL, this_process
from tumbler.runtime.spec import (Limits, SandboxInfo, SandboxSpec, SandboxState, SandboxStats,
                                  new_sandbox_id)

from tumbler.ops import DEFAULT_SESSION, DEFAULT_TIMEOUT_S, REPLY_GRACE_S  # noqa: F401 (re-exported)


FORK_STARTS = 16   # forked sandboxes started at once


@functools.lru_cache(maxsize=1)
def default_runtime() -> Runtime:
    from tumbler.runtime.process import ProcessRuntime
    return ProcessRuntime()


class LocalSandbox:
    """One sandbox on this host: created and started on construction, removed on exit."""

    def __init__(self, image: str = "debian", *, hostname: str = "sandbox",
                 env: dict[str, str] | None = None, cwd: str = "/root", network: str = "none",
                 memory: int | str = "512m", cpus: float = 1.0, pids: int = 512,
                 disk: int | str = "2g", inodes: int | None = None,
                 labels: dict[str, str] | None = None, runtime: Runtime | None = None,
                 spec: SandboxSpec | None = None, keep: bool = False,
                 egress: list[str] | None = None):
        """keep: let the sandbox outlive this process; by default the next process that opens
        the runtime removes it once this one is gone (SIGKILL included). egress: with
        network="egress", the hosts it may reach (tumbler.runtime.egress)."""
        self.runtime = runtime or default_runtime()
        if spec is None:
            try:
                spec = SandboxSpec(image=image, hostname=hostname, env=env or {}, cwd=cwd,
                                   network=network, egress=egress or [], labels=labels or {},
                                   limits=Limits(memory=memory, cpus=cpus, pids=pids, disk=disk,
                                                 **({} if inodes is None else {"inodes": inodes})))
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        if not keep:
            spec = spec.model_copy(update={"labels": {**spec.labels, OWNER_LABEL: this_process()}})
        self.info: SandboxInfo = self.runtime.create(spec)
        self.id = self.info.id
        self._agent: AgentClient | None = None
        try:
            self.start()
        except BaseException:
            self.runtime.remove(self.id)
            raise

    @classmethod
    def attach(cls, sandbox_id: str, runtime: Runtime | None = None) -> "LocalSandbox":
        """The object for a sandbox that exists already (made by another process, say)."""
        self = cls.__new__(cls)
        self.runtime = runtime or default_runtime()
        self.info = self.runtime.get(sandbox_id)
        self.id = sandbox_id
        self._agent = None
        if self.info.state == SandboxState.RUNNING:
            self._reconnect()
        return self

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.info = self.runtime.start(self.id)
        self._reconnect()

    def stop(self) -> None:
        self._disconnect()
        self.info = self.runtime.stop(self.id)

    def reset(self) -> None:
        """Back to the pristine image: processes, sessions and written files all gone."""
        self._disconnect()
        self.info = self.runtime.reset(self.id)
        self._reconnect()

    def pause(self) -> None:
        """Freeze every process: memory kept, no CPU used; calls are refused until resume()."""
        self.info = self.runtime.pause(self.id)

    def resume(self) -> None:
        self.info = self.runtime.resume(self.id)

    def fork(self, count: int, *, labels: dict[str, str] | None = None) -> list["LocalSandbox"]:
        """`count` new running sandboxes with copies of this one's files (not its processes),
        owned by this process like any LocalSandbox; this one keeps running."""
        children = self.runtime.fork(self.id, [new_sandbox_id() for _ in range(count)], labels)
        with ThreadPoolExecutor(min(FORK_STARTS, len(children))) as pool:
            futures = [pool.submit(self.runtime.start, child.id) for child in children]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for child in children:
                self.runtime.remove(child.id)
            raise failed[0]
        return [LocalSandbox.attach(child.id, self.runtime) for child in children]

    def snapshot(self, image: str) -> str:
        """Save this sandbox's files as a new image; later sandboxes can start from it."""
        return self.runtime.snapshot(self.id, image)

    def remove(self) -> None:
        self._disconnect()
        self.runtime.remove(self.id)
        self.info = self.info.model_copy(update={"state": SandboxState.REMOVED})

    close = remove

    def stats(self) -> SandboxStats:
        return self.runtime.stats(self.id)

    def health(self) -> dict:
        return self.do(ops.health())

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc) -> None:
        if self.info.state != SandboxState.REMOVED:
            self.remove()

    def __repr__(self) -> str:
        return f"LocalSandbox(id={self.id!r}, image={self.info.spec.image!r}, state={self.info.state.value})"

    # -- shell -----------------------------------------------------------------------------

    def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
            max_output: int | None = None,
            on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        """Run `command` in the sandbox's default bash session (state persists between calls).

        After `exit` the reply says `session_alive=False`, and the next run gets a fresh one."""
        return _run(self, ops.run(command, timeout=timeout, max_output=max_output,
                                  stream=on_output is not None, cwd=self.info.spec.cwd), on_output)

    def session(self, name: str, *, env: dict[str, str] | None = None, cwd: str | None = None,
                create: bool = True) -> "Session":
        """A persistent bash session; `create=False` attaches to one that exists."""
        if create:
            self.do(ops.session_create(name, env, cwd or self.info.spec.cwd))
        return Session(self, name)

    def sessions(self) -> list[dict]:
        return self.do(ops.sessions())

    def exec(self, command: str | list[str], *, env: dict[str, str] | None = None,
             cwd: str | None = None, stdin: bytes | str = b"", timeout: float = DEFAULT_TIMEOUT_S,
             max_output: int | None = None) -> ExecResult:
        """Run one process (argv list, or a string for /bin/sh -c) and wait for it."""
        data = stdin.encode() if isinstance(stdin, str) else stdin
        return self.do(ops.exec_(command, env=env, cwd=cwd or self.info.spec.cwd, stdin=data,
                                 timeout=timeout, max_output=max_output))

    # -- files -----------------------------------------------------------------------------

    def read_bytes(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return self.do(ops.read_file(path, offset, length))

    def read_file(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def write_file(self, path: str, data: str | bytes, *, mode: int | None = None,
                   append: bool = False) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.do(ops.write_file(path, body, mode=mode, append=append))

    def stat(self, path: str) -> FileInfo:
        return self.do(ops.stat(path))

    def list_dir(self, path: str) -> list[FileInfo]:
        return self.do(ops.list_dir(path))

    def remove_file(self, path: str, *, recursive: bool = False) -> None:
        self.do(ops.remove_file(path, recursive))

    def chmod(self, path: str, mode: int) -> None:
        self.do(ops.chmod(path, mode))

    def mkdir(self, path: str) -> None:
        self.do(ops.mkdir(path))

    def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory tree to `remote` in the sandbox."""
        local = Path(local)
        if not local.exists():
            raise InvalidRequest(f"no such local file or directory: {local}")
        if local.is_file():
            self.write_file(remote, local.read_bytes(), mode=local.stat().st_mode & 0o777)
            return
        self.do(ops.upload_tar(remote, tar_directory(local)))

    def download(self, remote: str, local: str | Path, *, links: bool = False) -> None:
        """Copy a sandbox file or directory tree to `local` on the host.

        The tree is unpacked as hostile input (`tumbler.archives`): files and directories only,
        symlinks and hard links too with `links=True` when they stay inside `local`."""
        local = Path(local)
        if self.stat(remote).type != "dir":
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.read_bytes(remote))
            return
        extract_tar(self.do(ops.download_tar(remote)), local, links=links)

    # -- processes -------------------------------------------------------------------------

    def processes(self) -> list[ProcessInfo]:
        return self.do(ops.processes())

    def kill(self, pid: int, signal: int | str = "TERM") -> None:
        self.do(ops.signal(pid, signal))

    # -- the agent -------------------------------------------------------------------------

    def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = 60.0, on_event: Callable[[dict, bytes], None] | None = None
             ) -> tuple[dict, bytes]:
        """One request to the in-sandbox agent, its errors turned into Tumbler's."""
        if self._agent is None:
            raise from_kind("conflict", f"sandbox {self.id} is {self.info.state.value}; start it first")
        with agent_errors(self.id, op, timeout):
            return self._agent.call(op, args or {}, body, timeout=timeout, on_event=on_event)

    def do(self, op: ops.Op, on_event: Callable[[dict, bytes], None] | None = None):
        """Send one op of `tumbler.ops` and parse its reply."""
        return op.parse(*self.call(op.name, op.args, op.body, timeout=op.timeout, on_event=on_event))

    def _reconnect(self) -> None:
        self._disconnect()
        self._agent = AgentClient(self.runtime.agent_socket(self.id))

    def _disconnect(self) -> None:
        if self._agent is not None:
            self._agent.close()
            self._agent = None


class Session:
    """A persistent bash session in a sandbox: cwd, variables and functions carry over."""

    def __init__(self, sandbox: LocalSandbox, name: str):
        self.sandbox = sandbox
        self.name = name

    def run(self, command: str, *, timeout: float = DEFAULT_TIMEOUT_S,
            max_output: int | None = None,
            on_output: Callable[[bytes], None] | None = None) -> CommandResult:
        """Run `command`; on timeout it is interrupted (the session lives on) and
        the result says timed_out. `on_output` receives output chunks while it runs."""
        return _run(self.sandbox, ops.run(command, session=self.name, timeout=timeout,
                                          max_output=max_output, stream=on_output is not None),
                    on_output)

    def input(self, data: str | bytes) -> None:
        """Type `data` into the running command (e.g. the answer to `read x`, with its newline)."""
        self.sandbox.do(ops.session_input(self.name, data.encode() if isinstance(data, str) else data))

    def interrupt(self) -> bool:
        """Interrupt the running command (^C); False when nothing was running."""
        return self.sandbox.do(ops.session_interrupt(self.name))

    def close(self) -> None:
        self.sandbox.do(ops.session_close(self.name))

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _run(sandbox: LocalSandbox, op: ops.Op, on_output) -> CommandResult:
    if on_output is None:
        return sandbox.do(op)
    chunks: list[bytes] = []

    def on_event(_header: dict, chunk: bytes) -> None:
        # A streamed run's reply has no body: the output is the chunks, in order.
        chunks.append(chunk)
        on_output(chunk)

    result, _ = sandbox.call(op.name, op.args, timeout=op.timeout, on_event=on_event)
    return op.parse(result, b"".join(chunks))
