"""An OpenAI- and Anthropic-compatible endpoint inside the sandbox whose answers come from the host.

The agent serves HTTP on 127.0.0.1:<port> in the sandbox's own network namespace, so a program
reaches it with the network off. Each chat completion (or Anthropic message) becomes a pending
call; the host long-polls for calls (`model.next`) and answers them (`model.respond`); the
waiting HTTP request then gets the answer, as JSON or, when it asked `stream: true`, as SSE
events (OpenAI's chunks, or Anthropic's message_start ... message_stop).

    POST /v1/chat/completions      GET /v1/models
    POST /v1/messages              (Anthropic's Messages API; the call's "api" is "anthropic",
                                    and the host answers it with an Anthropic message object)
    POST /v1/messages/count_tokens (answered here: an estimate, 4 bytes a token)
    POST /episodes/<episode>/v1/...   (the same, with the episode in the path:
                                       OPENAI_BASE_URL and ANTHROPIC_BASE_URL carry it unchanged)

Agent programs can be started here as episodes (`model.start`): their exit (or a kill at their
timeout) is reported through `model.next`, so a crashed or hung program is noticed.

Ops:
  model.enable  {port = 8377 (0: any free port), call_timeout: s = 300, models = ["policy"]}
                -> {port, base_url, owner}; enabling again keeps the port, changes the timeout
                and models, and makes a new owner token (the old owner's polls end)
  model.next    {owner, timeout: s = 30 (<= 600), max_calls = 256}
                -> {calls: [{call_id, episode, api, stream, size}], ended: [episode record],
                    expired: [call_id], stale: bool}; body = the calls' request JSON,
                concatenated. Waits until there is something to report or the timeout
                passes; a poll whose owner token is not the latest returns stale at once.
  model.respond {call_id, status = 200} body = a chat.completion JSON object, or for an
                "anthropic" call a message object (or, with a status >= 400, an error body)
                -> {delivered: bool}; false when the call expired or its episode ended first
  model.start   {episode, argv | command, env = {}, cwd = null, timeout: s = 3600}
                -> {episode, pid}; env gets OPENAI_BASE_URL, OPENAI_API_KEY,
                ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY for the episode
  model.stop    {episode} -> {}        kills the episode's program; its record follows
  model.disable {} -> {}               stops serving; waiting calls get 503

Episode record: {episode, exit_code, reason: exited|timeout|stopped, duration_s, output}
(output: the program's last 64 KiB of stdout and stderr, as text).
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import args as a
from . import children
from .execs import argv_of
from .protocol import CONFLICT, INVALID, NOT_FOUND, AgentRequestError

DEFAULT_PORT = 8377
DEFAULT_CALL_TIMEOUT = 300.0      # seconds an HTTP call waits for the host's answer
MAX_CALL_TIMEOUT = 24 * 3600.0    # seconds
MAX_POLL = 600.0                  # seconds one model.next may wait
MAX_REQUEST = 32 << 20            # bytes of one HTTP request body
OUTPUT_TAIL = 64 << 10            # bytes of an episode's output kept for its record
API_KEY = "tumbler"               # the openai package insists on a key; nothing checks it
LOOPBACK = "127.0.0.1"


OPENAI, ANTHROPIC = "openai", "anthropic"   # the APIs a call can come in


class _Call:
    """One chat completion (or Anthropic message) waiting for the host."""

    __slots__ = ("id", "episode", "raw", "stream", "api", "done", "status", "answer")

    def __init__(self, call_id: str, episode: str | None, raw: bytes, stream: bool,
                 api: str = OPENAI):
        self.id, self.episode, self.raw, self.stream, self.api = call_id, episode, raw, stream, api
        self.done = threading.Event()
        self.status, self.answer = 0, b""


class _Episode:
    """An agent program started by model.start, and what its record needs."""

    def __init__(self, name: str, proc: subprocess.Popen, timeout: float):
        self.name, self.proc = name, proc
        self.started = time.monotonic()
        self.output = collections.deque()
        self.output_size = 0
        self.reason = "exited"
        self.timer = threading.Timer(timeout, self.kill, args=("timeout",))
        self.timer.daemon = True

    def kill(self, reason: str) -> None:
        if self.reason == "exited":
            self.reason = reason
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def keep(self, chunk: bytes) -> None:
        """Keep the last OUTPUT_TAIL bytes of output."""
        self.output.append(chunk)
        self.output_size += len(chunk)
        while self.output_size - len(self.output[0]) >= OUTPUT_TAIL:
            self.output_size -= len(self.output.popleft())


class ModelHost:
    """The endpoint's state: the HTTP server, waiting calls, episodes and what the host is owed."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: list[_Call] = []             # arrived, not yet handed to the host
        self._waiting: dict[str, _Call] = {}      # arrived, not yet answered
        self._ended: list[dict] = []
        self._expired: list[str] = []
        self._episodes: dict[str, _Episode] = {}
        self._server: ThreadingHTTPServer | None = None
        # Held while a server starts or stops, so enable never binds before disable let go.
        self._server_lock = threading.Lock()
        self._next = 0
        self._owner = 0          # bumped by enable and disable: polls of older owners end
        self.call_timeout = DEFAULT_CALL_TIMEOUT
        self.models = ["policy"]

    # -- ops ------------------------------------------------------------------------------------

    def enable(self, req, body):
        port = a.get(req, "port", int, DEFAULT_PORT)
        timeout = a.seconds(req, "call_timeout", DEFAULT_CALL_TIMEOUT, MAX_CALL_TIMEOUT)
        models = a.get(req, "models", list, ["policy"])
        if not models or not all(isinstance(m, str) and m for m in models):
            raise AgentRequestError(INVALID, "'models' must be a non-empty list of model names")
        with self._server_lock, self._cond:
            self.call_timeout, self.models = timeout, list(models)
            if self._server is None:
                self._server = _start_server(self, port)
            bound = self._server.server_address[1]
            self._owner += 1
            self._cond.notify_all()
            owner = self._owner
        return {"port": bound, "base_url": f"http://{LOOPBACK}:{bound}/v1", "owner": owner}, b""

    def disable(self, req, body):
        with self._server_lock:
            return self._disable()

    def _disable(self):
        with self._cond:
            server, self._server = self._server, None
            self._owner += 1
            self._cond.notify_all()
            waiting = list(self._waiting.values())
            self._waiting.clear()
            self._queue.clear()
        for call in waiting:
            _finish(call, 503, _error("the model endpoint was disabled", "unavailable",
                                      "endpoint_disabled", call.api))
        if server is not None:
            server.shutdown()
            server.server_close()
        return {}, b""

    def next(self, req, body):
        owner = a.get(req, "owner", int)
        timeout = a.seconds(req, "timeout", 30.0, MAX_POLL)
        max_calls = a.get(req, "max_calls", int, 256)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (self._queue or self._ended or self._expired):
                left = deadline - time.monotonic()
                if owner != self._owner:
                    # An owner that detached (or was replaced): what comes next is the next one's.
                    return {"calls": [], "ended": [], "expired": [], "stale": True}, b""
                if left <= 0:
                    break
                self._cond.wait(left)
            if owner != self._owner:
                return {"calls": [], "ended": [], "expired": [], "stale": True}, b""
            calls, self._queue = self._queue[:max_calls], self._queue[max_calls:]
            ended, self._ended = self._ended, []
            expired, self._expired = self._expired, []
        meta = [{"call_id": c.id, "episode": c.episode, "api": c.api, "stream": c.stream,
                 "size": len(c.raw)} for c in calls]
        return ({"calls": meta, "ended": ended, "expired": expired, "stale": False},
                b"".join(c.raw for c in calls))

    def respond(self, req, body):
        call_id = a.get(req, "call_id", str)
        status = a.get(req, "status", int, 200)
        if not 200 <= status <= 599:
            raise AgentRequestError(INVALID, f"status must be an HTTP status (200-599), got {status}")
        with self._cond:
            call = self._waiting.pop(call_id, None)
        if call is None:
            return {"delivered": False}, b""
        if status == 200 and call.stream:
            body = _anthropic_sse(body) if call.api == ANTHROPIC else _sse(body)
        _finish(call, status, body)
        return {"delivered": True}, b""

    def start(self, req, body):
        name = a.get(req, "episode", str)
        timeout = a.seconds(req, "timeout", 3600.0, MAX_CALL_TIMEOUT)
        argv = argv_of(req)
        env = dict(os.environ)
        env.update(a.env(req))
        port = self._port()
        root = f"http://{LOOPBACK}:{port}/episodes/{name}"
        env.update({"OPENAI_BASE_URL": root + "/v1", "OPENAI_API_KEY": API_KEY,
                    "ANTHROPIC_BASE_URL": root, "ANTHROPIC_API_KEY": API_KEY})
        with self._cond:
            if name in self._episodes:
                raise AgentRequestError(CONFLICT, f"episode {name!r} is still running")
            try:
                proc = children.spawn(lambda: _popen(argv, env, a.get(req, "cwd", str, None)))
            except OSError as e:
                raise AgentRequestError(INVALID, f"cannot start {argv[0]!r}: {e.strerror}") from None
            episode = self._episodes[name] = _Episode(name, proc, timeout)
        episode.timer.start()
        threading.Thread(target=self._watch, args=(episode,), name=f"episode-{name}",
                         daemon=True).start()
        return {"episode": name, "pid": proc.pid}, b""

    def stop(self, req, body):
        name = a.get(req, "episode", str)
        with self._cond:
            episode = self._episodes.get(name)
        if episode is None:
            raise AgentRequestError(NOT_FOUND, f"no running episode {name!r}")
        episode.kill("stopped")
        return {}, b""

    # -- the HTTP side --------------------------------------------------------------------------

    def submit(self, episode: str | None, raw: bytes, stream: bool, api: str = OPENAI) -> _Call:
        """Queue a call for the host and wake its long-poll."""
        with self._cond:
            self._next += 1
            call = _Call(f"c{self._next}", episode, raw, stream, api)
            self._waiting[call.id] = call
            self._queue.append(call)
            self._cond.notify_all()
        return call

    def expire(self, call: _Call) -> bool:
        """The call waited too long: forget it and tell the host. False if it was answered."""
        with self._cond:
            if self._waiting.pop(call.id, None) is None:
                return False
            if call in self._queue:
                self._queue.remove(call)
            self._expired.append(call.id)
            self._cond.notify_all()
        return True

    # -- episodes -------------------------------------------------------------------------------

    def _port(self) -> int:
        with self._cond:
            if self._server is None:
                raise AgentRequestError(CONFLICT, "the model endpoint is off: call model.enable first")
            return self._server.server_address[1]

    def _watch(self, episode: _Episode) -> None:
        """Collect the program's output until it exits, then report the episode's end."""
        out = episode.proc.stdout
        reader = threading.Thread(target=_drain, args=(out, episode), daemon=True)
        reader.start()
        code = children.wait(episode.proc.pid)
        episode.proc.returncode = code   # reaped here: Popen must never wait on a reused pid
        episode.timer.cancel()
        # Descendants die with the episode: they could otherwise hold its pipe and the endpoint.
        episode.kill(episode.reason)
        reader.join(1.0)
        record = {"episode": episode.name, "exit_code": code, "reason": episode.reason,
                  "duration_s": round(time.monotonic() - episode.started, 3),
                  "output": b"".join(episode.output).decode("utf-8", "replace")}
        with self._cond:
            self._episodes.pop(episode.name, None)
            orphans = [c for c in self._waiting.values() if c.episode == episode.name]
            for call in orphans:
                self._waiting.pop(call.id)
                if call in self._queue:
                    self._queue.remove(call)
            self._ended.append(record)
            self._cond.notify_all()
        for call in orphans:
            _finish(call, 503, _error("the episode ended", "unavailable", "episode_ended", call.api))


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection; keep-alive, so a client's calls reuse one thread."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # small answers must not wait for a delayed ACK (~40 ms)
    server_version = "tumbler-model"
    host: ModelHost

    def log_message(self, format, *args):   # noqa: A002 - the base class's name
        """Quiet: one line per call on the agent's stderr is noise."""

    def do_GET(self):
        episode, route = _route(self.path)
        if route == "/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "tumbler"}
                    for m in self.host.models]
            return self._send(200, json.dumps({"object": "list", "data": data}).encode())
        if route is not None and route.startswith("/models/") and route[8:] in self.host.models:
            return self._send(200, json.dumps({"id": route[8:], "object": "model", "created": 0,
                                               "owned_by": "tumbler"}).encode())
        self._send(404, _error(f"no route GET {self.path}", "invalid_request_error", "not_found"))

    def do_POST(self):
        episode, route = _route(self.path)
        api = _APIS.get(route)
        if api is None and route != "/messages/count_tokens":
            self._discard_body()
            return self._send(404, _error(f"no route POST {self.path}; this endpoint serves "
                                          "/v1/chat/completions, /v1/messages and /v1/models",
                                          "invalid_request_error", "not_found"))
        raw, problem = self._read_body()
        stream = False
        if problem is None:
            stream, problem = _check_request(raw, api or ANTHROPIC)
        if problem is not None:
            return self._send(400, _error(problem, "invalid_request_error", "invalid_request",
                                          api or ANTHROPIC))
        if api is None:   # count_tokens: an estimate serves a program that budgets its context
            return self._send(200, json.dumps({"input_tokens": max(1, len(raw) // 4)}).encode())
        call = self.host.submit(episode, raw, stream, api)
        if not call.done.wait(self.host.call_timeout) and self.host.expire(call):
            return self._send(504, _error(
                f"the model owner did not answer within {self.host.call_timeout:g} s "
                "(is anything serving this sandbox's model calls?)", "timeout", "model_timeout",
                api))
        call.done.wait(5.0)   # answered while we were expiring it: the answer is being set
        self._send(call.status or 500, call.answer, "text/event-stream" if (
            call.stream and call.status == 200) else "application/json")

    def _read_body(self) -> tuple[bytes, str | None]:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return b"", "the request needs a Content-Length header and a JSON body"
        if int(length) > MAX_REQUEST:
            self.close_connection = True
            return b"", f"the request body is {length} bytes; the limit is {MAX_REQUEST}"
        return self.rfile.read(int(length)), None

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length", "0")
        if length.isdigit() and int(length) <= MAX_REQUEST:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _start_server(host: ModelHost, port: int) -> _Server:
    handler = type("Handler", (_Handler,), {"host": host})
    try:
        server = _Server((LOOPBACK, port), handler)
    except OSError as e:
        raise AgentRequestError(CONFLICT, f"cannot listen on {LOOPBACK}:{port}: {e.strerror}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                     name="model-http", daemon=True).start()
    return server


def _route(path: str) -> tuple[str | None, str | None]:
    """(episode, route under /v1) of a request path; route None when it is not under /v1."""
    path = path.split("?", 1)[0]
    episode = None
    if path.startswith("/episodes/"):
        episode, _, rest = path[len("/episodes/"):].partition("/")
        path = "/" + rest
    if not path.startswith("/v1/"):
        return episode, None
    return episode or None, path[3:].rstrip("/")


_APIS = {"/chat/completions": OPENAI, "/messages": ANTHROPIC}


def _check_request(raw: bytes, api: str = OPENAI) -> tuple[bool, str | None]:
    """(stream, problem) for a chat completion or Anthropic messages request body; problem
    None when it is fine."""
    try:
        req = json.loads(raw)
    except ValueError as e:
        return False, f"the request body is not valid JSON: {e}"
    if not isinstance(req, dict):
        return False, "the request body must be a JSON object"
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        return False, "'messages' must be a non-empty list of messages"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return False, f"messages[{i}] must be an object with a string 'role'"
    if "model" in req and not isinstance(req["model"], str):
        return False, "'model' must be a string"
    if api != OPENAI and not isinstance(req.get("system", ""), (str, list)):
        return False, "'system' must be a string or a list of content blocks"
    stream = req.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        return False, "'stream' must be a boolean"
    return bool(stream), None


def _sse(body: bytes) -> bytes:
    """A chat.completion object as the chat.completion.chunk events OpenAI streams."""
    try:
        completion = json.loads(body)
        choices = completion["choices"]
    except (ValueError, KeyError, TypeError):
        return b"data: " + _error("the model owner sent a malformed completion", "server_error",
                                  "bad_completion") + b"\n\ndata: [DONE]\n\n"
    base = {"id": completion.get("id", "chatcmpl"), "object": "chat.completion.chunk",
            "created": completion.get("created", int(time.time())),
            "model": completion.get("model", "policy")}
    events = []
    for choice in choices:
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        delta = {"role": message.get("role", "assistant"), "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(message["tool_calls"])]
        first = {"index": index, "delta": delta, "finish_reason": None}
        if choice.get("logprobs") is not None:
            first["logprobs"] = choice["logprobs"]
        events.append({**base, "choices": [first]})
        events.append({**base, "choices": [{"index": index, "delta": {},
                                            "finish_reason": choice.get("finish_reason", "stop")}]})
    if completion.get("usage") is not None:
        events.append({**base, "choices": [], "usage": completion["usage"]})
    out = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
    return b"".join(out) + b"data: [DONE]\n\n"


def _anthropic_sse(body: bytes) -> bytes:
    """An Anthropic message object as the events the Messages API streams: message_start,
    per content block content_block_start/delta/stop, message_delta, message_stop."""
    try:
        message = json.loads(body)
        blocks = list(message["content"])
    except (ValueError, KeyError, TypeError):
        return _event("error", json.loads(_error("the model owner sent a malformed message",
                                                 "server_error", "bad_completion", ANTHROPIC)))
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0}}
    out = [_event("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use":
            opening = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"),
                       "input": {}}
            delta = {"type": "input_json_delta",
                     "partial_json": json.dumps(block.get("input") or {}, separators=(",", ":"))}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text") or ""}
        out.append(_event("content_block_start", {"type": "content_block_start", "index": i,
                                                  "content_block": opening}))
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": i,
                                                  "delta": delta}))
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    out.append(_event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": message.get("stop_reason", "end_turn"),
                  "stop_sequence": message.get("stop_sequence")},
        "usage": {"output_tokens": usage.get("output_tokens", 0)}}))
    out.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def _event(name: str, data: dict) -> bytes:
    return (f"event: {name}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode()
            + b"\n\n")


def _error(message: str, kind: str, code: str, api: str = OPENAI) -> bytes:
    """An error body in the shape of the call's API (OpenAI's, or Anthropic's)."""
    if api == ANTHROPIC:
        kinds = {"invalid_request_error": "invalid_request_error", "timeout": "timeout_error",
                 "unavailable": "overloaded_error"}
        return json.dumps({"type": "error", "error": {"type": kinds.get(kind, "api_error"),
                                                      "message": message}}).encode()
    return json.dumps({"error": {"message": message, "type": kind, "param": None,
                                 "code": code}}).encode()


def _finish(call: _Call, status: int, answer: bytes) -> None:
    call.status, call.answer = status, answer
    call.done.set()


def _popen(argv: list[str], env: dict, cwd: str | None):
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    return proc.pid, proc


def _drain(out, episode: _Episode) -> None:
    try:
        while chunk := out.read1(1 << 16):
            episode.keep(chunk)
    except (OSError, ValueError):
        pass
    finally:
        out.close()
