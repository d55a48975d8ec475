"""A port inside a server's sandbox served on a local port (`tumbler sandbox forward ID PORT`):
each local connection becomes one WebSocket to `WS /v1/sandboxes/{id}/ports/{port}/tcp`."""
from __future__ import annotations

import socket
import threading
from contextlib import ExitStack

CONNECT_TIMEOUT_S = 30.0
CHUNK = 1 << 16


class Forward:
    """Listen on 127.0.0.1:`local_port` (0: any free one, see `.port`); relay each connection
    to `port` inside the sandbox until `close()`."""

    def __init__(self, url: str, token: str | None, sandbox_id: str, port: int,
                 local_port: int = 0):
        self.ws_url = url.replace("http", "ws", 1).rstrip("/") + \
            f"/v1/sandboxes/{sandbox_id}/ports/{port}/tcp"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.listener = socket.create_server(("127.0.0.1", local_port))
        self.port = self.listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name="forward", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        from websockets.sync.client import connect
        with ExitStack() as stack:
            stack.callback(client.close)
            # shutdown first: it sends the FIN and wakes the thread blocked reading the client
            stack.callback(_shutdown, client)
            try:
                ws = stack.enter_context(connect(self.ws_url, additional_headers=self.headers,
                                                 max_size=None, open_timeout=CONNECT_TIMEOUT_S))
            except Exception:   # refused, unreachable: this connection only
                return

            def upstream():
                try:
                    while data := client.recv(CHUNK):
                        ws.send(data)
                except OSError:
                    pass
                ws.close()
            threading.Thread(target=upstream, daemon=True).start()
            try:
                for message in ws:
                    client.sendall(message if isinstance(message, bytes) else message.encode())
            except Exception:   # either side went: both are closed on the way out
                return

    def close(self) -> None:
        self._closed.set()
        self.listener.close()

    def __enter__(self) -> "Forward":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
