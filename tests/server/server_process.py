"""Test helpers: `tumbler serve` in a subprocess, SDK clients that remember what they created,
and `sweep`, the leak check after a test."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from checks import leftovers, reap  # noqa: F401  (reap: for this module's importers)
from tumbler.sdk import AsyncClient, Client, core

TOKEN = "test-token-3f9a"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`tumbler serve` in a subprocess with its own state dir (registry) and port."""

    def __init__(self, state_dir: Path, **config):
        self.state_dir = state_dir
        self.config = {"host": "127.0.0.1", "port": free_port(), "state_dir": str(state_dir),
                       "tokens": [TOKEN], "log_level": "warning", **config}
        self.url = f"http://127.0.0.1:{self.config['port']}"
        self.token = (self.config["tokens"] or [None])[0]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        code = ("import sys; from tumbler.cli.serve import run; "
                "from tumbler.server.config import ServerConfig; "
                "run(ServerConfig.model_validate_json(sys.argv[1]))")
        self.log = open(self.state_dir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.state_dir / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.terminate()    # no orphan server: a slow start leaves nothing running
        raise RuntimeError(f"server did not come up in {START_TIMEOUT_S:.0f} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM: graceful shutdown; returns the exit status (-15 after a clean shutdown)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def client(self, token: str | None = TOKEN) -> "TrackingClient":
        return TrackingClient(self.url, token)


def _remember(made: list[str], call, result) -> None:
    if call.method == "POST" and call.path == "/v1/sandboxes":
        made.append(result.id)
    elif call.method == "POST" and call.path.endswith("/fork"):
        made.extend(sb.id for sb in result)


class TrackingClient(Client):
    """A Client that remembers the ids of the sandboxes it created."""

    def __init__(self, url, token):
        super().__init__(url, token)
        self.made: list[str] = []

    def send(self, call):
        result = super().send(call)
        _remember(self.made, call, result)
        return result


class AsyncTrackingClient(AsyncClient):
    def __init__(self, url, token, made: list[str], **options):
        super().__init__(url, token, **options)
        self.made = made

    async def send(self, call):
        result = await super().send(call)
        _remember(self.made, call, result)
        return result


def sweep(client: Client, runtime, made: list[str]) -> None:
    """Remove what is still on the server and assert that nothing of `made` is left on the host."""
    for sb in client.list():
        try:
            client.send(core.remove(sb.id))
        except Exception:
            pass
        made.append(sb.id)
    for sid in set(made):
        assert leftovers(runtime, sid) == [], sid



def leftovers_after(runtime, sandbox_id: str, timeout_s: float = 10.0) -> list[str]:
    """leftovers() once they are gone or `timeout_s` passed: a sandbox leaves the server's list
    when its removal starts, and the teardown (runc, unmount) takes a moment more."""
    deadline = time.monotonic() + timeout_s
    while (found := leftovers(runtime, sandbox_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found
