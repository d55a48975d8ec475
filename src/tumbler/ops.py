"""The agent's ops, each defined once on the host side, with no I/O (the httpx way).

    op = ops.run("echo hi", timeout=5)            # an Op: name, args, body, timeout, parse
    result, body = transport.call(op.name, op.args, op.body, timeout=op.timeout)
    print(op.parse(result, body).output)          # a CommandResult

Every host-side caller of an agent (`LocalSandbox`, the server's `SandboxService`, a cluster
`NodeHost`) builds its requests here and parses the replies here, so an op's argument names, its
timeout plus grace, the default-session policy and how its reply turns into a result exist once.
What carries the request (a unix socket, HTTP, Ray) is the caller's business. The reply caps
that guard the host against a hostile agent are `tumbler.agentclient.blocking.reply_limit`, per op too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo

DEFAULT_TIMEOUT_S = 300.0    # seconds a command or process may run when no timeout is given
REPLY_GRACE_S = 15.0         # room on top of a command's own timeout to interrupt it and answer
CONTROL_TIMEOUT_S = 30.0     # sessions, small file ops, processes, envs' make and close
BULK_TIMEOUT_S = 600.0       # file contents and tars
DEFAULT_SESSION = "default"


def _result(result: dict, _body: bytes) -> dict:
    return result


def known(model, fields: dict) -> dict:
    """The fields of an agent's result that `model` has (a newer agent may send more)."""
    names = _FIELDS.get(model)
    if names is None:   # pydantic's model_fields costs a deprecation check at each access
        names = _FIELDS[model] = frozenset(model.model_fields)
    return {k: v for k, v in fields.items() if k in names}


_FIELDS: dict[type, frozenset[str]] = {}


@dataclass(frozen=True)
class Op:
    """One request to an agent and how to read its reply."""

    name: str
    args: dict = field(default_factory=dict)
    body: bytes = b""
    timeout: float = CONTROL_TIMEOUT_S
    parse: Callable[[dict, bytes], Any] = _result


# -- bash sessions -----------------------------------------------------------------------------

def run(command: str, *, session: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
        max_output: int | None = None, stream: bool = False, cwd: str | None = None) -> Op:
    """A command in `session`; None is the default session, which the agent makes on the first
    command and makes anew after its bash exited (`exit`), in the same round trip."""
    args: dict = {"name": session or DEFAULT_SESSION, "command": command, "timeout": timeout,
                  "stream": stream}
    if session is None:
        args["ensure"] = True
        if cwd is not None:
            args["cwd"] = cwd
    if max_output is not None:
        args["max_output"] = max_output
    return Op("session.run", args, timeout=timeout + REPLY_GRACE_S, parse=_command_result)


def _command_result(result: dict, body: bytes) -> CommandResult:
    return CommandResult(output_bytes=body, **known(CommandResult, result))


def session_create(name: str, env: dict[str, str] | None = None, cwd: str | None = None) -> Op:
    return Op("session.create", {"name": name, "env": env or {}, "cwd": cwd})


def session_prestart(env: dict[str, str] | None = None, cwd: str | None = None) -> Op:
    """A spare bash in the agent, taken over by the first session made with this env and cwd
    (a warm pool's sandboxes: their first command then starts no bash). Answers
    {"spare": bool}; never an error for a bash that cannot start."""
    return Op("session.prestart", {"env": env or {}, "cwd": cwd})


def session_input(name: str, data: bytes) -> Op:
    return Op("session.input", {"name": name}, data)


def session_interrupt(name: str) -> Op:
    return Op("session.interrupt", {"name": name},
              parse=lambda r, _b: bool(r.get("interrupted", True)))


def session_close(name: str) -> Op:
    return Op("session.close", {"name": name})


def sessions() -> Op:
    return Op("session.list", parse=lambda r, _b: r["sessions"])


# -- processes ---------------------------------------------------------------------------------

def exec_(command: str | list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
          stdin: bytes = b"", timeout: float = DEFAULT_TIMEOUT_S, max_output: int | None = None) -> Op:
    """One process to completion: an argv list, or a string for /bin/sh -c."""
    args: dict = {"env": env or {}, "cwd": cwd, "timeout": timeout,
                  "argv" if isinstance(command, list) else "command": command}
    if max_output is not None:
        args["max_output"] = max_output
    return Op("exec", args, stdin, timeout=timeout + REPLY_GRACE_S, parse=_exec_result)


def _exec_result(result: dict, body: bytes) -> ExecResult:
    result = dict(result)
    cut = result.pop("stdout_len", len(body))
    return ExecResult(stdout_bytes=body[:cut], stderr_bytes=body[cut:], **known(ExecResult, result))


def processes() -> Op:
    return Op("proc.list", parse=lambda r, _b: [ProcessInfo(**known(ProcessInfo, p))
                                               for p in r["processes"]])


def signal(pid: int, sig: int | str = "TERM") -> Op:
    return Op("proc.signal", {"pid": pid, "signal": sig})


def health() -> Op:
    return Op("health", timeout=10)


# -- files -------------------------------------------------------------------------------------

def read_file(path: str, offset: int = 0, length: int | None = None) -> Op:
    return Op("file.read", {"path": path, "offset": offset, "length": length},
              timeout=BULK_TIMEOUT_S, parse=lambda _r, body: body)


def write_file(path: str, data: bytes, *, mode: int | None = None, append: bool = False) -> Op:
    return Op("file.write", {"path": path, "mode": mode, "append": append, "parents": True}, data,
              timeout=BULK_TIMEOUT_S, parse=lambda r, _b: int(r.get("size", len(data))))


def stat(path: str) -> Op:
    return Op("file.stat", {"path": path}, parse=lambda r, _b: FileInfo(**known(FileInfo, r)))


def list_dir(path: str) -> Op:
    return Op("file.list", {"path": path},
              parse=lambda r, _b: [FileInfo(**known(FileInfo, e)) for e in r["entries"]])


def remove_file(path: str, recursive: bool = False) -> Op:
    return Op("file.remove", {"path": path, "recursive": recursive})


def chmod(path: str, mode: int) -> Op:
    return Op("file.chmod", {"path": path, "mode": mode})


def mkdir(path: str, parents: bool = True) -> Op:
    return Op("file.mkdir", {"path": path, "parents": parents})


def upload_tar(path: str, tar: bytes) -> Op:
    return Op("file.upload_tar", {"path": path}, tar, timeout=BULK_TIMEOUT_S,
              parse=lambda r, _b: int(r.get("members", 0)))


def download_tar(path: str, to: str | None = None) -> Op:
    """The tar of `path` as the reply's body; or, with `to`, written to that file in the sandbox
    (its size in the reply) for the caller to read out in parts."""
    if to is not None:
        return Op("file.download_tar", {"path": path, "to": to}, timeout=BULK_TIMEOUT_S,
                  parse=lambda r, _b: int(r.get("size", 0)))
    return Op("file.download_tar", {"path": path}, timeout=BULK_TIMEOUT_S,
              parse=lambda _r, body: body)


# -- hosted envs -------------------------------------------------------------------------------

def env_make(env_id: str, kwargs: dict | None = None) -> Op:
    return Op("env.make", {"env_id": env_id, "kwargs": kwargs or {}}, parse=lambda r, _b: r["handle"])


def env_reset(handle: str, seed: int | None, timeout: float) -> Op:
    return Op("env.reset", {"handle": handle, "seed": seed}, timeout=timeout,
              parse=lambda r, _b: (r["obs"], r["info"]))


def env_step(handle: str, action: str, timeout: float) -> Op:
    return Op("env.step", {"handle": handle, "action": action}, timeout=timeout,
              parse=lambda r, _b: (r["obs"], r["reward"], r["terminated"], r["truncated"], r["info"]))


def env_sample(handle: str, kind: str, timeout: float) -> Op:
    return Op("env.sample", {"handle": handle, "kind": kind}, timeout=timeout,
              parse=lambda r, _b: r["action"])


def env_close(handle: str) -> Op:
    return Op("env.close", {"handle": handle})
