"""A terminal over a WebSocket (`WS /v1/sandboxes/{id}/pty`): a full-screen program (top)
drawn, resized and quit; a client that vanishes leaves no process behind."""
from __future__ import annotations

import time

import pytest

from checks import IMAGE, wait_for
from server_process import TOKEN
from tumbler import Sandbox
from tumbler.errors import SandboxError
from tumbler.sdk.terminal import Terminal


def _read_until(term: Terminal, needle: bytes, out: bytearray, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    for chunk in term:
        out.extend(chunk)
        if needle in out:
            return
        assert time.monotonic() < deadline, f"no {needle!r} in {bytes(out[-500:])!r}"
    raise AssertionError(f"the terminal ended before {needle!r}: {bytes(out[-500:])!r}")


def test_top_draws_resizes_and_quits(server, api):
    sb = Sandbox(IMAGE, client=api)
    out = bytearray()
    with Terminal(server.url, TOKEN, sb.id, cols=100, rows=30, cmd=["top", "-d", "0.3"]) as term:
        _read_until(term, b"load average", out)
        assert b"\x1b[" in out                          # it draws with escape sequences
        term.resize(132, 40)
        out.clear()
        _read_until(term, b"load average", out)         # redrawn after SIGWINCH
        term.send(b"q")
        for chunk in term:
            pass
        assert term.exit_code == 0
    sizes = sb.exec(["sh", "-c", "ps -o args= -e"]).stdout
    assert "top -d" not in sizes
    sb.remove()


def test_shell_size_and_a_vanished_client(server, api):
    sb = Sandbox(IMAGE, client=api)
    out = bytearray()
    term = Terminal(server.url, TOKEN, sb.id, cols=77, rows=19)
    term.send(b"stty size; sleep 1000 & echo mark-$((6*7))\n")
    _read_until(term, b"mark-42", out)
    assert b"\r19 77\r\n" in out                       # stty size: rows cols
    assert "sleep 1000" in sb.exec(["ps", "-o", "args=", "-e"]).stdout
    term._ws.socket.close()                             # gone without a close frame
    wait_for(lambda: "sleep 1000" not in sb.exec(["ps", "-o", "args=", "-e"]).stdout, 30,
             "the terminal's processes to be killed")
    sb.remove()


def test_terminal_refusals(server, api):
    with pytest.raises(Exception):
        Terminal(server.url, "wrong-token", "whatever")
    with pytest.raises(SandboxError, match="no sandbox"):
        with Terminal(server.url, TOKEN, "nosuchsandbox") as term:
            list(term)


def test_cli_shell_on_a_real_terminal(server, api):
    """`tumbler sandbox shell ID` on a terminal: raw mode, the terminal's size, the exit code."""
    import fcntl
    import os
    import select
    import struct
    import subprocess
    import sys
    import termios
    sb = Sandbox(IMAGE, client=api)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
    env = {**os.environ, "TUMBLER_URL": server.url, "TUMBLER_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tumbler.cli", "sandbox", "shell", sb.id],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    out = bytearray()
    try:
        os.write(master, b"stty size; exit 3\r")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    out.extend(os.read(master, 4096))
                except OSError:
                    break
        assert proc.wait(30) == 3, bytes(out)
        assert b"33 111" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        sb.remove()
