"""A hostile agent for tests: a unix-socket server that speaks the agent's frames and answers
each op as a taken-over agent might (oversized frames, dripped events, forged tars).

    with HostileAgent(tmp_path / "a.sock", {"file.read": huge_frame}) as agent:
        AgentClient(agent.path).call("file.read", {"path": "/x", "length": 16})

A handler gets (sock, request header, body) and writes whatever it likes to the socket.
Root inside a sandbox can take over the real agent (until nothing it runs on is writable, and
even then a bug may let it): the host must survive any of these answers.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path
from typing import Callable

from tumbler.agent.protocol import HEADER, encode, read_frame

Handler = Callable[[socket.socket, dict, bytes], None]


def reply(result: dict, body: bytes = b"") -> Handler:
    def handle(sock, header, _body):
        sock.sendall(encode({"id": header["id"], "ok": True, "result": result}, body))
    return handle


def huge_frame(body_len: int = 512 << 20) -> Handler:
    """Claims a body of body_len bytes, then streams zeros until the peer hangs up."""
    def handle(sock, header, _body):
        head = f'{{"id":{header["id"]},"ok":true,"result":{{}}}}'.encode()
        sock.sendall(HEADER.pack(len(head), body_len) + head)
        chunk = bytes(1 << 20)
        for _ in range(body_len >> 20):
            sock.sendall(chunk)
    return handle


def drip(every_s: float = 0.2) -> Handler:
    """Sends one output event every `every_s` seconds, forever (until the peer hangs up)."""
    def handle(sock, header, _body):
        while True:
            sock.sendall(encode({"id": header["id"], "event": "output"}, b"."))
            time.sleep(every_s)
    return handle


class HostileAgent:
    def __init__(self, path: Path, handlers: dict[str, Handler]):
        self.path = str(path)
        self.handlers = handlers
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(16)
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> "HostileAgent":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        for sock in [self._listener, *self._conns]:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked on it; close() would not
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                header, body = read_frame(conn)
                handler = self.handlers.get(header.get("op"))
                if handler is None:
                    conn.sendall(encode({"id": header["id"], "ok": False,
                                         "error": {"kind": "invalid", "message": "no such op"}}))
                else:
                    handler(conn, header, body)
        except (OSError, EOFError, struct.error, ValueError):
            conn.close()
