"""The wire format between the host and the in-sandbox agent (standard library only).

One unix-socket connection carries frames; each frame is

    struct ">II" (header_len, body_len) | header: UTF-8 JSON object | body: raw bytes

Requests:   {"id": int, "op": "session.run", "args": {...}}   body: input bytes (file data, stdin)
Events:     {"id": int, "event": "output"}                    body: a chunk of output, in order
Replies:    {"id": int, "ok": true, "result": {...}}          body: output / file bytes
            {"id": int, "ok": false, "error": {"kind": ..., "message": ...}}

Every request gets exactly one reply, after zero or more events. A connection may carry many
requests at once (replies are matched by id); a client may also keep one request per connection.
Error kinds match `tumbler.errors` (the agent cannot import it: it runs on the image's python3).
The ops, their arguments and results are listed in `tumbler.agent` (its __init__ docstring).
"""
from __future__ import annotations

import json
import socket
import struct

PROTOCOL_VERSION = 1
HEADER = struct.Struct(">II")
MAX_HEADER = 1 << 20          # bytes; a JSON header is small, anything bigger is an attack or a bug
MAX_BODY = 1 << 30            # bytes; one frame's body (a file, a tar, an output)
SMALL_BODY = 1 << 16          # bytes; bodies up to this size are sent in one write with the header

# Error kinds (mirror tumbler.errors.*.kind).
INVALID = "invalid"
NOT_FOUND = "not_found"
EXISTS = "exists"
CONFLICT = "conflict"
TIMEOUT = "timeout"
INTERNAL = "internal"


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol."""


class BadHeader(ProtocolError):
    """A frame whose lengths were fine but whose header is not a JSON object (stream still in step)."""


class AgentRequestError(Exception):
    """An error reply, raised inside the agent by a handler and sent back with its kind."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def encode(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
    return HEADER.pack(len(head), len(body)) + head + body


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes; EOFError if the peer closed first."""
    if n == 0:
        return b""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("connection closed")
        got += k
    return bytes(buf)


def send_frame(sock: socket.socket, header: dict, body: bytes = b"") -> None:
    """Write one frame; a large body goes out as its own write so it is never copied."""
    head = json.dumps(header, separators=(",", ":")).encode()
    prefix = HEADER.pack(len(head), len(body)) + head
    if len(body) <= SMALL_BODY:
        sock.sendall(prefix + body)
    else:
        sock.sendall(prefix)
        sock.sendall(body)


def read_raw_frame(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one frame's header bytes and body; ProtocolError if its lengths are out of bounds.

    Both parts are consumed before the header is parsed, so a header that is not valid JSON
    leaves the stream in step (the reader can answer it and go on).
    """
    head_len, body_len = HEADER.unpack(recv_exact(sock, HEADER.size))
    if head_len > MAX_HEADER or body_len > MAX_BODY:
        raise ProtocolError(f"frame too large: header {head_len} bytes, body {body_len} bytes")
    return recv_exact(sock, head_len), recv_exact(sock, body_len)


def parse_header(head: bytes) -> dict:
    """The header as a dict; BadHeader if it is not a JSON object."""
    try:
        header = json.loads(head)
    except ValueError as e:
        raise BadHeader(f"frame header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise BadHeader("frame header is not a JSON object")
    return header


def read_frame(sock: socket.socket) -> tuple[dict, bytes]:
    head, body = read_raw_frame(sock)
    return parse_header(head), body
