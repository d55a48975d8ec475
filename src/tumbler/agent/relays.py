"""TCP connections to the sandbox's own ports, made from inside it for the host's port proxy
and forwarding (the sandbox has its own network namespace; only the agent is in it).

Ops: `tcp.open` {port} -> {id} (to 127.0.0.1:port inside the sandbox), `tcp.read` {id, after,
wait} (what the port sent, as eventlog events; `end` once it closed), `tcp.write` {id} with the
bytes as body, `tcp.close` {id} (also ends its reading). At most MAX_CONNS at once.
"""
from __future__ import annotations

import secrets
import socket
import threading

from . import args as a
from .eventlog import EventLog
from .protocol import INVALID, NOT_FOUND, AgentRequestError

MAX_CONNS = 256
KEEP_BYTES = 4 << 20         # bytes the port sent that are kept unread per connection
CONNECT_TIMEOUT = 5.0        # seconds
SEND_TIMEOUT = 30.0          # seconds one write may wait for the port to read
READ_CHUNK = 1 << 16

_lock = threading.Lock()
_conns: dict[str, "Conn"] = {}


class Conn(EventLog):
    def __init__(self, sock: socket.socket, port: int):
        super().__init__(KEEP_BYTES)
        self.sock, self.port = sock, port


def open_(req: dict, body: bytes) -> tuple[dict, bytes]:
    port = a.get(req, "port", int)
    if not 1 <= port <= 65535:
        raise AgentRequestError(INVALID, f"port must be between 1 and 65535, not {port}")
    with _lock:
        if len(_conns) >= MAX_CONNS:
            raise AgentRequestError(INVALID, f"{MAX_CONNS} forwarded connections are open already")
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        raise AgentRequestError(INVALID, f"nothing listens on port {port} in the sandbox") from None
    except OSError as e:
        raise AgentRequestError(INVALID, f"port {port} in the sandbox: {e.strerror or e}") from None
    sock.settimeout(SEND_TIMEOUT)
    conn = Conn(sock, port)
    conn_id = secrets.token_hex(8)
    with _lock:
        _conns[conn_id] = conn
    threading.Thread(target=_follow, args=(conn_id, conn), name=f"tcp-{port}", daemon=True).start()
    return {"id": conn_id}, b""


def read(req: dict, body: bytes) -> tuple[dict, bytes]:
    conn = _conn(req)
    return conn.read(a.get(req, "after", int, 0), a.get(req, "wait", (int, float), 0))


def write(req: dict, body: bytes) -> tuple[dict, bytes]:
    conn = _conn(req)
    try:
        conn.sock.sendall(body)
    except OSError as e:
        raise AgentRequestError(INVALID, f"port {conn.port}: not written: {e.strerror or e}") from None
    return {}, b""


def close(req: dict, body: bytes) -> tuple[dict, bytes]:
    with _lock:
        conn = _conns.pop(a.get(req, "id", str), None)
    if conn is not None:
        _shut(conn.sock)
    return {}, b""


def _conn(req: dict) -> Conn:
    conn_id = a.get(req, "id", str)
    with _lock:
        conn = _conns.get(conn_id)
    if conn is None:
        raise AgentRequestError(NOT_FOUND, f"no forwarded connection {conn_id!r}")
    return conn


def _follow(conn_id: str, conn: Conn) -> None:
    """Collect what the port sends until it closes (or the connection is closed here)."""
    try:
        while True:
            try:
                data = conn.sock.recv(READ_CHUNK)
            except TimeoutError:   # the socket's timeout bounds writes; a quiet port is fine
                continue
            if not data:
                break
            conn.add("data", data)
    except OSError:
        pass
    conn.finish({"closed": True})


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
