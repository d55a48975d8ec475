"""The host's client of the agent: a small pool of unix-socket connections, one call in flight each.

    client = AgentClient("/run/tumbler/sb-1/agent.sock")
    client.call("session.create", {"name": "main"})
    result, output = client.call("session.run", {"name": "main", "command": "echo hi"})

A call takes an idle connection (or opens one), sends one request, reads events and the reply,
and gives the connection back. That is the lowest latency for synchronous callers and safe from
any number of threads. Standard library only, so it sits beside the protocol it speaks.
"""
from __future__ import annotations

import socket
import threading

from .protocol import AgentRequestError, ProtocolError, read_frame, send_frame

CONNECT_TIMEOUT = 5.0       # seconds to connect to the agent's socket
DEFAULT_TIMEOUT = 60.0      # seconds for a call whose args carry no timeout of their own
TIMEOUT_SLACK = 30.0        # seconds added to an op's own `timeout` for the agent to answer
MAX_IDLE = 8                # connections kept open for reuse


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
             timeout: float | None = None, on_event=None) -> tuple[dict, bytes]:
        """Send one request; return (result, body) of its reply.

        timeout: seconds to wait for the reply; by default the op's own `timeout` argument plus
        30 s, or 60 s. on_event(header, body) is called for each event (e.g. streamed output).
        Raises AgentRequestError for an error reply, AgentGone when the agent is unreachable or
        hangs up, TimeoutError when no reply comes in time (that connection is dropped).
        """
        args = args or {}
        if timeout is None:
            own = args.get("timeout")
            timeout = own + TIMEOUT_SLACK if isinstance(own, (int, float)) else DEFAULT_TIMEOUT
        sock, rid = self._acquire()
        try:
            sock.settimeout(timeout)
            send_frame(sock, {"id": rid, "op": op, "args": args}, body)
            header, reply_body = self._read_reply(sock, rid, on_event)
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
        if not header.get("ok"):
            error = header.get("error") or {}
            raise AgentRequestError(error.get("kind", "internal"), error.get("message", "unknown error"))
        return header.get("result") or {}, reply_body

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

    @staticmethod
    def _read_reply(sock: socket.socket, rid: int, on_event) -> tuple[dict, bytes]:
        while True:
            header, body = read_frame(sock)
            if header.get("id") != rid:
                raise ProtocolError(f"reply for request {header.get('id')!r}, expected {rid}")
            if "event" not in header:
                return header, body
            if on_event is not None:
                on_event(header, body)

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
