"""The SDK's wire logic, shared by the sync and async clients; it touches no socket.

Each API operation is a function that returns a `Call`: the HTTP request to make and how to read
its reply. `Client` and `AsyncClient` only send Calls (with retries) and hand back `parse(reply)`.
Imports only tumbler.wire, tumbler.errors and tumbler.models (and httpx, for its Request).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

import httpx

from tumbler import wire
from tumbler.errors import TumblerError, from_kind
from tumbler.models import CommandResult, ExecResult, FileInfo
from tumbler.runtime.spec import SandboxStats

DEFAULT_URL = "http://127.0.0.1:8040"
# Seconds on top of a command's own timeout for the server to interrupt it and answer.
REPLY_GRACE_S = 30.0
OP_TIMEOUT_S = 120.0       # seconds for requests that carry no timeout of their own
BULK_TIMEOUT_S = 900.0     # seconds for creates, resets and file transfers
RETRIES = 4                # connection attempts after the first, on connection errors only
BACKOFF_S = 0.05           # first retry delay, doubling each time


def default_url() -> str:
    return os.environ.get("TUMBLER_URL", DEFAULT_URL)


def default_token() -> str | None:
    token = os.environ.get("TUMBLER_TOKEN", "")
    return token.split(",")[0] or None


def backoff_s(attempt: int) -> float:
    """Delay before retry number `attempt` (0-based), seconds."""
    return BACKOFF_S * (2 ** attempt)


@dataclass
class Reply:
    """What a transport got back: status code, headers (lower-case names) and body bytes."""

    status: int
    content: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One HTTP request and how to read its successful reply."""

    method: str
    path: str
    parse: Callable[[Reply], Any]
    params: dict | None = None
    json_body: wire.Request | None = None
    content: bytes | None = None
    timeout: float = OP_TIMEOUT_S
    content_type: str = "application/octet-stream"   # of `content`
    # A command's run (sandbox id, session or None): what AsyncClient may send in a batch.
    run_of: tuple[str, str | None] | None = None

    def body_and_headers(self) -> tuple[bytes | None, dict[str, str]]:
        if self.json_body is not None:
            return self.json_body.model_dump_json().encode(), {"content-type": "application/json"}
        if self.content is not None:
            return self.content, {"content-type": self.content_type}
        return None, {}


class RequestBuilder:
    """Builds the httpx.Request for a Call: absolute URL (parsed once per distinct URL, which
    for a session's run route is once), auth and content headers, per-call timeout.

    Cheaper than httpx.Client.build_request, whose URL merging and cookie handling cost more
    CPU per request than the rest of the SDK; Tumbler's API uses no cookies or redirects."""

    MAX_CACHED_URLS = 4096

    def __init__(self, base_url: str, token: str | None):
        self.base_url = base_url.rstrip("/")
        self.auth = [("authorization", f"Bearer {token}")] if token else []
        self._urls: dict[str, httpx.URL] = {}
        self._heads: dict[tuple[str, str], tuple[bytes, str, int]] = {}

    def raw(self, call: Call, chunked: bool = False) -> tuple[bytes, bytes, str, int]:
        """(head, body, host, port) of a Call for `transport.*.fetch`: the bytes `build` and
        the transport would send (the same request line, Host, auth, content type and length),
        the request line and fixed headers made once per distinct method and URL. `chunked`:
        a body sent later in chunks (the run stream's), so no length."""
        body, headers = call.body_and_headers()
        url = self.base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params, doseq=True)
        key = (call.method, url)
        cached = self._heads.get(key)
        if cached is None:
            if len(self._heads) >= self.MAX_CACHED_URLS:
                self._heads.clear()
            parsed = self._url(url)
            lines = [f"{call.method} {parsed.raw_path.decode('ascii')} HTTP/1.1",
                     f"Host: {parsed.netloc.decode('ascii')}"]
            lines += [f"{name}: {value}" for name, value in self.auth]
            cached = self._heads[key] = (("\r\n".join(lines) + "\r\n").encode("latin-1"),
                                         parsed.host, parsed.port or 80)
        prefix, host, port = cached
        body = body or b""
        head = prefix + b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        if chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        elif body or call.method in ("POST", "PUT", "PATCH"):
            head += b"Content-Length: %d\r\n" % len(body)
        return head + b"\r\n", body, host, port

    def _url(self, url: str) -> httpx.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= self.MAX_CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        return parsed

    def build(self, call: Call) -> httpx.Request:
        body, headers = call.body_and_headers()
        url = self.base_url + call.path
        if call.params:
            url += "?" + urlencode(call.params, doseq=True)
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= self.MAX_CACHED_URLS:
                self._urls.clear()
            parsed = self._urls[url] = httpx.URL(url)
        timeout = {"connect": call.timeout, "read": call.timeout, "write": call.timeout,
                   "pool": call.timeout}
        return httpx.Request(call.method, parsed, headers=self.auth + list(headers.items()),
                             content=body, extensions={"timeout": timeout})


def error_for(reply: Reply) -> TumblerError:
    """The tumbler.errors exception for an error reply (by its kind, else by its status)."""
    try:
        detail = json.loads(reply.content)["error"]
        kind, message = detail["kind"], detail["message"]
    except (ValueError, KeyError, TypeError):
        kind, message = _KIND_BY_STATUS.get(reply.status, "internal"), \
            reply.content[:500].decode(errors="replace") or f"HTTP {reply.status}"
    exc = from_kind(kind, message)
    if type(exc) is TumblerError:  # a kind this SDK does not know: keep the server's status
        exc.status = reply.status
        exc.kind = kind
    return exc


_KIND_BY_STATUS = {400: "invalid", 401: "unauthorized", 404: "not_found", 409: "conflict",
                   413: "too_large", 422: "invalid", 429: "capacity", 502: "sandbox",
                   504: "timeout"}


def finish(call: Call, reply: Reply):
    if reply.status >= 400:
        raise error_for(reply)
    return call.parse(reply)


# -- reply readers ---------------------------------------------------------------------------

def _model(model):
    # Replies are read leniently: a field a newer server adds (to the spec, say) must not break
    # this client; requests stay strict (wire.Request forbids unknown fields).
    return lambda reply: model.model_validate_json(reply.content, extra="ignore")


def _none(_reply: Reply) -> None:
    return None


def _raw(reply: Reply) -> bytes:
    return reply.content


def _command(reply: Reply) -> CommandResult:
    return CommandResult.model_validate_json(reply.content)


def _exec(reply: Reply) -> ExecResult:
    return ExecResult.model_validate_json(reply.content)


# -- calls ------------------------------------------------------------------------------------

def _sb(sandbox_id: str, rest: str = "") -> str:
    return f"{wire.API_PREFIX}/sandboxes/{sandbox_id}{rest}"


def health() -> Call:
    return Call("GET", "/healthz", _model(wire.Health), timeout=10)


def create(req: wire.CreateSandboxRequest) -> Call:
    return Call("POST", f"{wire.API_PREFIX}/sandboxes", _model(wire.SandboxOut), json_body=req,
                timeout=BULK_TIMEOUT_S)


def _listing(path: str, model, field: str) -> Call:
    """GET of a list route: the list in `field` of the reply's `model`."""
    return Call("GET", path, lambda r: getattr(model.model_validate_json(r.content), field))


def list_nodes() -> Call:
    return _listing(f"{wire.API_PREFIX}/nodes", wire.NodeList, "nodes")


def list_pools() -> Call:
    return _listing(f"{wire.API_PREFIX}/pools", wire.PoolList, "pools")


def set_pool(name: str, size: int, sandbox: wire.CreateSandboxRequest,
             per_node: int | None = None) -> Call:
    return Call("PUT", f"{wire.API_PREFIX}/pools/{name}", _model(wire.PoolOut),
                json_body=wire.PoolRequest(size=size, sandbox=sandbox, per_node=per_node))


def remove_pool(name: str) -> Call:
    return Call("DELETE", f"{wire.API_PREFIX}/pools/{name}", _none)


def get(sandbox_id: str) -> Call:
    return Call("GET", _sb(sandbox_id), _model(wire.SandboxOut))


def list_sandboxes(state: str | None, labels: dict[str, str] | None) -> Call:
    params: dict = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]}
    if state:
        params["state"] = state
    return Call("GET", f"{wire.API_PREFIX}/sandboxes", lambda r: wire.SandboxList.model_validate_json(
        r.content).sandboxes, params=params)


def lifecycle(sandbox_id: str, op: str) -> Call:
    """op: stop, start, reset, pause or resume."""
    return Call("POST", _sb(sandbox_id, f"/{op}"), _model(wire.SandboxOut), timeout=BULK_TIMEOUT_S)


def remove(sandbox_id: str) -> Call:
    return Call("DELETE", _sb(sandbox_id), _none, timeout=BULK_TIMEOUT_S)


def fork(sandbox_id: str, count: int, labels: dict[str, str] | None) -> Call:
    return Call("POST", _sb(sandbox_id, "/fork"),
                lambda r: wire.SandboxList.model_validate_json(r.content).sandboxes,
                json_body=wire.ForkRequest(count=count, labels=labels or {}), timeout=BULK_TIMEOUT_S)


def snapshot(sandbox_id: str, image: str) -> Call:
    return Call("POST", _sb(sandbox_id, "/snapshot"), lambda r: wire.SnapshotResponse.model_validate_json(
        r.content).image, json_body=wire.SnapshotRequest(image=image), timeout=BULK_TIMEOUT_S)


def stats(sandbox_id: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/stats"), _model(SandboxStats))


def create_session(sandbox_id: str, name: str, env: dict | None, cwd: str | None) -> Call:
    return Call("POST", _sb(sandbox_id, "/sessions"), _none,
                json_body=wire.SessionCreateRequest(name=name, env=env or {}, cwd=cwd))


def list_sessions(sandbox_id: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/sessions"),
                lambda r: [s.model_dump() for s in wire.SessionList.model_validate_json(r.content).sessions])


def session_history(sandbox_id: str, session: str) -> Call:
    return _listing(_sb(sandbox_id, f"/sessions/{session}/history"), wire.SessionHistory, "entries")


def list_runs() -> Call:
    return _listing(f"{wire.API_PREFIX}/runs", wire.TrainRunList, "runs")


def list_task_runs() -> Call:
    return _listing(f"{wire.API_PREFIX}/task-runs", wire.TaskRunList, "runs")


def _run_path(sandbox_id: str, session: str | None, stream: bool) -> str:
    base = "/run" if session is None else f"/sessions/{session}/run"
    return _sb(sandbox_id, base + ("/stream" if stream else ""))


def run(sandbox_id: str, session: str | None, command: str, timeout: float,
        max_output: int | None, stream: bool = False) -> Call:
    """session None: the sandbox's default session. stream: SSE reply (read with `sse_events`)."""
    return Call("POST", _run_path(sandbox_id, session, stream), _command,
                json_body=wire.RunRequest(command=command, timeout=timeout, max_output=max_output,
                                          text=False),
                timeout=timeout + REPLY_GRACE_S,
                run_of=None if stream else (sandbox_id, session))


def session_input(sandbox_id: str, session: str, data: str | bytes) -> Call:
    body = wire.InputRequest(data=data) if isinstance(data, str) else wire.InputRequest(data_b64=wire.b64(data))
    return Call("POST", _sb(sandbox_id, f"/sessions/{session}/input"), _none, json_body=body)


def interrupt(sandbox_id: str, session: str) -> Call:
    return Call("POST", _sb(sandbox_id, f"/sessions/{session}/interrupt"),
                lambda r: wire.InterruptResponse.model_validate_json(r.content).interrupted)


def close_session(sandbox_id: str, session: str) -> Call:
    return Call("DELETE", _sb(sandbox_id, f"/sessions/{session}"), _none)


def exec_(sandbox_id: str, command: str | list[str], env: dict | None, cwd: str | None,
          stdin: bytes | str, timeout: float, max_output: int | None) -> Call:
    data = stdin.encode() if isinstance(stdin, str) else stdin
    req = wire.ExecRequest(argv=command if isinstance(command, list) else None,
                           command=command if isinstance(command, str) else None,
                           env=env or {}, cwd=cwd, stdin_b64=wire.b64(data), timeout=timeout,
                           max_output=max_output, text=False)
    return Call("POST", _sb(sandbox_id, "/exec"), _exec, json_body=req, timeout=timeout + REPLY_GRACE_S)


def read_bytes(sandbox_id: str, path: str, offset: int, length: int | None) -> Call:
    params: dict = {"path": path, "offset": offset}
    if length is not None:
        params["length"] = length
    return Call("GET", _sb(sandbox_id, "/files/content"), _raw, params=params, timeout=BULK_TIMEOUT_S)


def write_bytes(sandbox_id: str, path: str, data: bytes, mode: int | None, append: bool) -> Call:
    params: dict = {"path": path, "append": str(append).lower()}
    if mode is not None:
        params["mode"] = mode
    return Call("PUT", _sb(sandbox_id, "/files/content"), _none, params=params, content=data,
                timeout=BULK_TIMEOUT_S)


def stat(sandbox_id: str, path: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/files/stat"), _model(FileInfo), params={"path": path})


def list_dir(sandbox_id: str, path: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/files/list"),
                lambda r: wire.FileList.model_validate_json(r.content).entries, params={"path": path})


def remove_file(sandbox_id: str, path: str, recursive: bool) -> Call:
    return Call("DELETE", _sb(sandbox_id, "/files"), _none,
                params={"path": path, "recursive": str(recursive).lower()})


def chmod(sandbox_id: str, path: str, mode: int) -> Call:
    return Call("POST", _sb(sandbox_id, "/files/chmod"), _none,
                json_body=wire.ChmodRequest(path=path, mode=mode))


def mkdir(sandbox_id: str, path: str) -> Call:
    return Call("POST", _sb(sandbox_id, "/files/mkdir"), _none, json_body=wire.MkdirRequest(path=path))


def upload_tar(sandbox_id: str, path: str, tar: bytes) -> Call:
    return Call("PUT", _sb(sandbox_id, "/files/tar"), _none, params={"path": path}, content=tar,
                timeout=BULK_TIMEOUT_S)


def download_tar(sandbox_id: str, path: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/files/tar"), _raw, params={"path": path},
                timeout=BULK_TIMEOUT_S)


def processes(sandbox_id: str) -> Call:
    return Call("GET", _sb(sandbox_id, "/processes"),
                lambda r: wire.ProcessList.model_validate_json(r.content).processes)


def kill(sandbox_id: str, pid: int, signal: int | str) -> Call:
    return Call("POST", _sb(sandbox_id, f"/processes/{pid}/signal"), _none,
                json_body=wire.SignalRequest(signal=signal))


# -- create arguments, shared by Sandbox and AsyncSandbox -------------------------------------

def op(sandbox_id: str, name: str, args: dict | None, body: bytes, timeout: float) -> Call:
    """One agent op as it is (the sandbox handle): the reply is (result, body)."""
    req = wire.OpRequest(op=name, args=args or {}, body_b64=wire.b64(body) if body else "",
                         timeout_s=timeout)
    return Call("POST", _sb(sandbox_id, "/op"), _op_reply, json_body=req,
                timeout=timeout + REPLY_GRACE_S)


def _op_reply(reply: Reply) -> tuple[dict, bytes]:
    out = wire.OpReply.model_validate_json(reply.content)
    return out.result, wire.unb64(out.body_b64) if out.body_b64 else b""


def batch(calls: list[tuple[str, Any]]) -> Call:
    """Many ops of `tumbler.ops` ((sandbox id, Op) pairs) in one request; the reply is a list
    with, for each, its parsed result or the TumblerError it raised."""
    req = wire.BatchOpRequest(calls=[
        wire.BatchOpItem(sandbox_id=sid, op=o.name, args=o.args, timeout_s=o.timeout,
                         body_b64=wire.b64(o.body) if o.body else "") for sid, o in calls])
    timeout = max((o.timeout for _, o in calls), default=OP_TIMEOUT_S) + REPLY_GRACE_S

    def parse(reply: Reply) -> list:
        results = wire.BatchOpReply.model_validate_json(reply.content).results
        return [o.parse(r.result, wire.unb64(r.body_b64) if r.body_b64 else b"") if r.ok
                else from_kind(r.error_kind or "internal", r.error_message or "")
                for (_, o), r in zip(calls, results)]
    return Call("POST", f"{wire.API_PREFIX}/ops", parse, json_body=req, timeout=timeout)


def create_request(image: str, *, hostname: str = "sandbox", env: dict[str, str] | None = None,
                   cwd: str = "/root", network: str = "none", memory: int | str = "512m",
                   cpus: float = 1.0, pids: int = 512, disk: int | str = "2g",
                   inodes: int | None = None, ttl: float | None = None,
                   max_lifetime: float | None = None,
                   labels: dict[str, str] | None = None) -> wire.CreateSandboxRequest:
    """The create request for LocalSandbox-style arguments (ttl, max_lifetime: seconds).
    A bad value raises InvalidRequest naming the field (wire.Request)."""
    return wire.CreateSandboxRequest(
        image=image, hostname=hostname, env=env or {}, cwd=cwd, network=network,
        limits={"memory": memory, "cpus": cpus, "pids": pids, "disk": disk,
                **({} if inodes is None else {"inodes": inodes})},
        ttl_s=ttl, max_lifetime_s=max_lifetime, labels=labels or {})


# -- server-sent events -----------------------------------------------------------------------

class SSEParser:
    """Feeds on body chunks, yields (event, data) pairs as they complete."""

    def __init__(self):
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[tuple[str, str]]:
        self._buf += chunk
        while b"\n\n" in self._buf:
            block, self._buf = self._buf.split(b"\n\n", 1)
            event, data = "message", []
            for line in block.decode().splitlines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            yield event, "\n".join(data)


def stream_event(event: str, data: str, on_output: Callable[[bytes], None],
                 output: list[bytes]) -> CommandResult | None:
    """Handle one SSE event of a streamed run; the CommandResult once the `result` comes."""
    if event == "output":
        chunk = wire.unb64(wire.StreamChunk.model_validate_json(data).data_b64)
        output.append(chunk)
        on_output(chunk)
        return None
    if event == "error":
        raise error_for(Reply(500, data.encode()))
    if event == "result":
        result = CommandResult.model_validate_json(data)
        return result.model_copy(update={"output_bytes": b"".join(output)})
    return None
