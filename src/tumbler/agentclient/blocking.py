"""The host's client of the agent: a small pool of unix-socket connections, one call in flight each.

    client = AgentClient("/run/tumbler/sb-1/agent.sock")
    client.call("session.create", {"name": "main"})
    result, output = client.call("session.run", {"name": "main", "command": "echo hi"})

A call takes an idle connection (or opens one), sends one request, reads events and the reply,
and gives the connection back. That is the lowest latency for synchronous callers and safe from
any number of threads. Host side only: it lives outside `agent/`, the folder mounted into
sandboxes, and imports the protocol from there.
"""
from __future__ import annotations

import socket
import threading
import time

from tumbler.agent.protocol import (HEADER, MAX_BODY, MAX_HEADER, AgentRequestError, ProtocolError,
                       parse_header, send_frame)

CONNECT_TIMEOUT = 5.0       # seconds to connect to the agent's socket
DEFAULT_TIMEOUT = 60.0      # seconds for a call whose args carry no timeout of their own
TIMEOUT_SLACK = 30.0        # seconds added to an op's own `timeout` for the agent to answer
MAX_IDLE = 8                # connections kept open for reuse
DEFAULT_OUTPUT = 64 << 20   # bytes of output a run/exec keeps when it asks for no max_output
SMALL_REPLY = 1 << 20       # bytes of body an op that returns no data may send back
MODEL_REPLY = 64 << 20      # bytes of request JSON model.next may hand over at once
MAX_EVENTS = 1 << 20        # events one call may receive (each carries at least one byte)
NOTE_ROOM = 4096            # bytes past max_output for the agent's own notes (why a program failed to start)


class ReplyTooLarge(ProtocolError):
    """The agent sent more than the call asked for: a bug or a hostile sandbox."""


def reply_limit(op: str, args: dict) -> int:
    """The most body bytes a reply (or all of a call's events together) may carry for this op.

    Whatever the agent says, the host reads no more than what the call asked for: the agent
    runs inside the sandbox, where root can take it over, so its frames are hostile input.
    """
    output = args.get("max_output")
    output = output if isinstance(output, int) and output >= 0 else DEFAULT_OUTPUT
    if op == "session.run":
        return output + NOTE_ROOM
    if op == "exec":
        return 2 * output + NOTE_ROOM
    if op == "file.read":
        length = args.get("length")
        return length if isinstance(length, int) and 0 <= length <= MAX_BODY else MAX_BODY
    if op == "file.download_tar":
        return MAX_BODY
    if op.startswith("model."):
        return MODEL_REPLY
    return SMALL_REPLY


class AgentGone(ConnectionError):
    """The agent's socket refused us or closed mid-call: the agent died or is not there yet."""


class AgentClient:
    """Calls ops on one agent. Thread-safe."""

    def __init__(self, path: str, connect_timeout: float = CONNECT_TIMEOUT):
        self.path = path
        self.connect_timeout = connect_timeout
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._next_id = 0
        self._closed = False

    def call(self, op: str, args: dict | None = None, body: bytes = b"",
             timeout: float | None = None, on_event=None,
             max_reply: int | None = None) -> tuple[dict, bytes]:
        """Send one request; return (result, body) of its reply.

        timeout: seconds for the whole call, events included (one deadline, not per read); by
        default the op's own `timeout` argument plus 30 s, or 60 s. on_event(header, body) is
        called for each event (e.g. streamed output). max_reply: the most body bytes accepted
        (by default `reply_limit(op, args)`), for the reply and for all events together.
        Raises AgentRequestError for an error reply, AgentGone when the agent is unreachable or
        hangs up or sends more than asked for, TimeoutError when no reply comes in time (that
        connection is dropped).
        """
        args = args or {}
        if timeout is None:
            own = args.get("timeout")
            timeout = own + TIMEOUT_SLACK if isinstance(own, (int, float)) else DEFAULT_TIMEOUT
        limit = reply_limit(op, args) if max_reply is None else max_reply
        deadline = time.monotonic() + timeout
        sock, rid = self._acquire()
        try:
            sock.settimeout(timeout)
            send_frame(sock, {"id": rid, "op": op, "args": args}, body)
            header, reply_body = _read_reply(sock, rid, on_event, deadline, limit)
        except TimeoutError:
            sock.close()
            raise TimeoutError(f"agent did not answer {op} within {timeout} s") from None
        except (EOFError, OSError, ProtocolError) as e:
            sock.close()
            raise AgentGone(f"agent at {self.path} hung up during {op}: {e}") from None
        except BaseException:
            sock.close()
            raise
        self._release(sock)
        return reply_of(header, reply_body, op, self.path)

    def close(self) -> None:
        """Close every idle connection; later calls raise AgentGone."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _acquire(self) -> tuple[socket.socket, int]:
        with self._lock:
            if self._closed:
                raise AgentGone(f"client for {self.path} is closed")
            self._next_id += 1
            rid = self._next_id
            if self._idle:
                return self._idle.pop(), rid
        return self._connect(), rid

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise AgentGone(f"cannot connect to the agent at {self.path}: {e}") from None
        return sock

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < MAX_IDLE:
                self._idle.append(sock)
                return
        sock.close()


def reply_of(header: dict, body: bytes, op: str, path: str) -> tuple[dict, bytes]:
    """(result, body) of a reply, or its error raised; what the agent wrote is held to shape
    (an error's text is cut to 4 KiB, a result must be an object)."""
    if not header.get("ok"):
        error = header.get("error") or {}
        raise AgentRequestError(str(error.get("kind", "internal")),
                                str(error.get("message", "unknown error"))[:4096])
    result = header.get("result") or {}
    if not isinstance(result, dict):
        raise AgentGone(f"agent at {path} sent a result for {op} that is not an object")
    return result, body


def _read_reply(sock: socket.socket, rid: int, on_event, deadline: float,
                limit: int) -> tuple[dict, bytes]:
    """Events, then the reply of request `rid`, all before `deadline` and within `limit` bytes."""
    events = event_bytes = 0
    while True:
        head_len, body_len = HEADER.unpack(_recv(sock, HEADER.size, deadline))
        if head_len > MAX_HEADER or body_len > limit - event_bytes:
            raise ReplyTooLarge(f"frame of {head_len}+{body_len} bytes, over the "
                                f"{limit - event_bytes} bytes this call may still receive")
        header = parse_header(_recv(sock, head_len, deadline))
        body = _recv(sock, body_len, deadline)
        if header.get("id") != rid:
            raise ProtocolError(f"reply for request {header.get('id')!r}, expected {rid}")
        if "event" not in header:
            return header, body
        events += 1
        event_bytes += body_len
        if events > MAX_EVENTS:
            raise ReplyTooLarge(f"more than {MAX_EVENTS} events for one call")
        if on_event is not None:
            on_event(header, body)


def _recv(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Exactly n bytes before the deadline (TimeoutError), EOFError if the peer closed first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        sock.settimeout(left)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("connection closed")
        got += k
    return bytes(buf)
