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
from pathlib import Path
from typing import Callable

from tumbler.agent.client import AgentClient
from tumbler.archives import extract_tar, tar_directory
from tumbler.agent_errors import agent_errors
from tumbler.errors import InvalidRequest, from_kind
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.base import Runtime
from tumbler.runtime.spec import Limits, SandboxInfo, SandboxSpec, SandboxState, SandboxStats

DEFAULT_TIMEOUT_S = 300.0
# Room on top of a command's own timeout for the agent to interrupt it and answer.
REPLY_GRACE_S = 15.0
DEFAULT_SESSION = "default"


@functools.lru_cache(maxsize=1)
def default_runtime() -> Runtime:
    from tumbler.runtime.process import ProcessRuntime
    return ProcessRuntime()


class LocalSandbox:
    """One sandbox on this host: created and started on construction, removed on exit."""

    def __init__(self, image: str = "debian", *, hostname: str = "sandbox",
                 env: dict[str, str] | None = None, cwd: str = "/root", network: str = "none",
                 memory: int | str = "512m", cpus: float = 1.0, pids: int = 512,
                 disk: int | str = "2g", inodes: int = 131072,
                 labels: dict[str, str] | None = None, runtime: Runtime | None = None,
                 spec: SandboxSpec | None = None):
        self.runtime = runtime or default_runtime()
        if spec is None:
            try:
                spec = SandboxSpec(image=image, hostname=hostname, env=env or {}, cwd=cwd,
                                   network=network, labels=labels or {},
                                   limits=Limits(memory=memory, cpus=cpus, pids=pids,
                                                 disk=disk, inodes=inodes))
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None
        self.info: SandboxInfo = self.runtime.create(spec)
        self.id = self.info.id
        self._agent: AgentClient | None = None
        self._default_session = False
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
        self._default_session = False
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
        return self.call("health", timeout=10)[0]

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
        """Run `command` in the sandbox's default bash session (state persists between calls)."""
        if not self._default_session:
            self._ensure_session(DEFAULT_SESSION)
        return self.session(DEFAULT_SESSION, create=False).run(
            command, timeout=timeout, max_output=max_output, on_output=on_output)

    def session(self, name: str, *, env: dict[str, str] | None = None, cwd: str | None = None,
                create: bool = True) -> "Session":
        """A persistent bash session; `create=False` attaches to one that exists."""
        if create:
            self.call("session.create", {"name": name, "env": env or {},
                                         "cwd": cwd or self.info.spec.cwd}, timeout=30)
        return Session(self, name)

    def sessions(self) -> list[dict]:
        return self.call("session.list", timeout=10)[0]["sessions"]

    def exec(self, command: str | list[str], *, env: dict[str, str] | None = None,
             cwd: str | None = None, stdin: bytes | str = b"", timeout: float = DEFAULT_TIMEOUT_S,
             max_output: int | None = None) -> ExecResult:
        """Run one process (argv list, or a string for /bin/sh -c) and wait for it."""
        args: dict = {"env": env or {}, "cwd": cwd or self.info.spec.cwd, "timeout": timeout}
        args["argv" if isinstance(command, list) else "command"] = command
        if max_output is not None:
            args["max_output"] = max_output
        data = stdin.encode() if isinstance(stdin, str) else stdin
        result, body = self.call("exec", args, data, timeout=timeout + REPLY_GRACE_S)
        cut = result.pop("stdout_len")
        return ExecResult(stdout_bytes=body[:cut], stderr_bytes=body[cut:], **_known(ExecResult, result))

    # -- files -----------------------------------------------------------------------------

    def read_bytes(self, path: str, *, offset: int = 0, length: int | None = None) -> bytes:
        return self.call("file.read", {"path": path, "offset": offset, "length": length})[1]

    def read_file(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def write_file(self, path: str, data: str | bytes, *, mode: int | None = None,
                   append: bool = False) -> None:
        body = data.encode() if isinstance(data, str) else data
        self.call("file.write", {"path": path, "mode": mode, "append": append, "parents": True}, body)

    def stat(self, path: str) -> FileInfo:
        return FileInfo(**self.call("file.stat", {"path": path})[0])

    def list_dir(self, path: str) -> list[FileInfo]:
        return [FileInfo(**e) for e in self.call("file.list", {"path": path})[0]["entries"]]

    def remove_file(self, path: str, *, recursive: bool = False) -> None:
        self.call("file.remove", {"path": path, "recursive": recursive})

    def chmod(self, path: str, mode: int) -> None:
        self.call("file.chmod", {"path": path, "mode": mode})

    def mkdir(self, path: str) -> None:
        self.call("file.mkdir", {"path": path, "parents": True})

    def upload(self, local: str | Path, remote: str) -> None:
        """Copy a host file or directory tree to `remote` in the sandbox."""
        local = Path(local)
        if not local.exists():
            raise InvalidRequest(f"no such local file or directory: {local}")
        if local.is_file():
            self.write_file(remote, local.read_bytes(), mode=local.stat().st_mode & 0o777)
            return
        self.call("file.upload_tar", {"path": remote}, tar_directory(local), timeout=600)

    def download(self, remote: str, local: str | Path, *, links: bool = False) -> None:
        """Copy a sandbox file or directory tree to `local` on the host.

        The tree is unpacked as hostile input (`tumbler.archives`): files and directories only,
        symlinks and hard links too with `links=True` when they stay inside `local`."""
        local = Path(local)
        if self.stat(remote).type != "dir":
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.read_bytes(remote))
            return
        data = self.call("file.download_tar", {"path": remote}, timeout=600)[1]
        extract_tar(data, local, links=links)

    # -- processes -------------------------------------------------------------------------

    def processes(self) -> list[ProcessInfo]:
        return [ProcessInfo(**p) for p in self.call("proc.list")[0]["processes"]]

    def kill(self, pid: int, signal: int | str = "TERM") -> None:
        self.call("proc.signal", {"pid": pid, "signal": signal})

    # -- the agent -------------------------------------------------------------------------

    def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = 60.0, on_event: Callable[[dict, bytes], None] | None = None
             ) -> tuple[dict, bytes]:
        """One request to the in-sandbox agent, its errors turned into Tumbler's."""
        if self._agent is None:
            raise from_kind("conflict", f"sandbox {self.id} is {self.info.state.value}; start it first")
        with agent_errors(self.id, op, timeout):
            return self._agent.call(op, args or {}, body, timeout=timeout, on_event=on_event)

    def _ensure_session(self, name: str) -> None:
        try:
            self.session(name)
        except Exception as exc:  # an existing session is what we wanted
            if getattr(exc, "kind", "") != "exists":
                raise
        self._default_session = True

    def _reconnect(self) -> None:
        self._disconnect()
        self._agent = AgentClient(self.runtime.agent_socket(self.id))

    def _disconnect(self) -> None:
        self._default_session = False
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
        args: dict = {"name": self.name, "command": command, "timeout": timeout,
                      "stream": on_output is not None}
        if max_output is not None:
            args["max_output"] = max_output
        chunks: list[bytes] = []

        def on_event(_header: dict, chunk: bytes) -> None:
            # A streamed run's reply has no body: the output is the chunks, in order.
            chunks.append(chunk)
            on_output(chunk)

        result, body = self.sandbox.call("session.run", args, timeout=timeout + REPLY_GRACE_S,
                                         on_event=on_event if on_output else None)
        output = b"".join(chunks) if on_output else body
        return CommandResult(output_bytes=output, **_known(CommandResult, result))

    def input(self, data: str | bytes) -> None:
        """Type `data` into the running command (e.g. the answer to `read x`, with its newline)."""
        body = data.encode() if isinstance(data, str) else data
        self.sandbox.call("session.input", {"name": self.name}, body)

    def interrupt(self) -> None:
        self.sandbox.call("session.interrupt", {"name": self.name}, timeout=30)

    def close(self) -> None:
        self.sandbox.call("session.close", {"name": self.name}, timeout=30)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _known(model, fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k in model.model_fields}
