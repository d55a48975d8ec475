"""A terminal in a server's sandbox (`WS /v1/sandboxes/{id}/pty`): `Terminal` for programs,
and `attach_tty` for a person at a real terminal (what `tumbler sandbox shell` runs).

    with Terminal(url, token, sandbox_id, cols=100, rows=30, cmd=["top"]) as term:
        term.send(b"q")
        for chunk in term:          # what the terminal wrote, as bytes
            ...
        term.exit_code              # set once the program ended
"""
from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Iterator
from urllib.parse import urlencode

from tumbler.errors import SandboxError

CONNECT_TIMEOUT_S = 30.0


class Terminal:
    """One program on a PTY in a sandbox. Closing it (or leaving the `with`) kills the program."""

    def __init__(self, url: str, token: str | None, sandbox_id: str, *, cols: int = 80,
                 rows: int = 24, cmd: list[str] | None = None):
        from websockets.sync.client import connect
        query = urlencode([("cols", cols), ("rows", rows), *(("cmd", c) for c in cmd or [])])
        ws_url = url.replace("http", "ws", 1).rstrip("/") + f"/v1/sandboxes/{sandbox_id}/pty?{query}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._stack = ExitStack()    # the connection is a context manager; it closes with us
        self._ws = self._stack.enter_context(connect(
            ws_url, additional_headers=headers, max_size=None, open_timeout=CONNECT_TIMEOUT_S))
        self.exit_code: int | None = None

    def send(self, data: bytes) -> None:
        """Type `data` into the terminal."""
        self._ws.send(data)

    def resize(self, cols: int, rows: int) -> None:
        self._ws.send(json.dumps({"resize": {"cols": cols, "rows": rows}}))

    def __iter__(self) -> Iterator[bytes]:
        """The terminal's output until the program ends (then `exit_code` is set)."""
        from websockets.exceptions import ConnectionClosed
        try:
            for message in self._ws:
                if isinstance(message, bytes):
                    yield message
                    continue
                event = json.loads(message)
                if "error" in event:
                    raise SandboxError(f"terminal: {event['error']}")
                if "exit_code" in event:
                    self.exit_code = int(event["exit_code"])
        except ConnectionClosed:
            return

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attach_tty(url: str, token: str | None, sandbox_id: str, cmd: list[str] | None = None) -> int:
    """Run `cmd` (a login shell by default) in the sandbox on this process's terminal, in raw
    mode, resized with it, until the program exits; returns its exit code."""
    import termios
    import tty
    size = os.get_terminal_size(sys.stdout.fileno())
    term = Terminal(url, token, sandbox_id, cols=size.columns, rows=size.lines, cmd=cmd)
    saved = termios.tcgetattr(sys.stdin.fileno())
    stop = threading.Event()

    def on_winch(_sig, _frame):
        s = os.get_terminal_size(sys.stdout.fileno())
        term.resize(s.columns, s.lines)

    def type_keys():
        while not stop.is_set():
            ready, _, _ = select.select([sys.stdin.fileno()], [], [], 0.2)
            if ready:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    return
                try:
                    term.send(data)
                except Exception:   # the connection went: the output loop ends too
                    return

    previous = signal.signal(signal.SIGWINCH, on_winch)
    tty.setraw(sys.stdin.fileno(), termios.TCSANOW)   # keep what was typed ahead
    typist = threading.Thread(target=type_keys, daemon=True)
    typist.start()
    try:
        for chunk in term:
            os.write(sys.stdout.fileno(), chunk)
    finally:
        stop.set()
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        term.close()
    return term.exit_code if term.exit_code is not None else 1
