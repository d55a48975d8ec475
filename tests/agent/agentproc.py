"""Start a real agent process, as the sandbox starts it (python3 -I -S), for the agent tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tumbler.agentclient.blocking import AgentClient

AGENT_PARENT = Path(__file__).resolve().parents[2] / "src" / "tumbler"
START_TIMEOUT = 10.0    # seconds for the agent's socket to appear


class RunningAgent:
    def __init__(self, proc: subprocess.Popen, path: str):
        self.proc = proc
        self.path = path
        self.client = AgentClient(path)

    def call(self, op, args=None, body=b"", **kw):
        return self.client.call(op, args, body, **kw)

    def session(self, name, **args):
        self.call("session.create", {"name": name, **args})
        return name

    def run(self, name, command, on_event=None, **args):
        return self.call("session.run", {"name": name, "command": command, **args}, on_event=on_event)

    def children(self) -> list[tuple[int, str]]:
        """(pid, state) of the agent's child processes, zombies included."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            if int(fields[1]) == self.proc.pid:
                found.append((int(entry), fields[0].decode()))
        return found

    def wait_for_no_children(self, timeout: float = 3.0) -> list[tuple[int, str]]:
        end = time.monotonic() + timeout
        while (left := self.children()) and time.monotonic() < end:
            time.sleep(0.02)
        return left


def start_agent(directory: Path) -> RunningAgent:
    path = str(directory / "agent.sock")
    code = (f"import sys; sys.path.insert(0, {str(AGENT_PARENT)!r}); "
            "from agent.server import main; main()")
    log = open(directory / "agent.log", "wb")
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code, "--socket", path, "--subreaper"],
                            stderr=log, stdin=subprocess.DEVNULL)
    end = time.monotonic() + START_TIMEOUT
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            raise RuntimeError(f"agent did not start: {(directory / 'agent.log').read_text()}")
        time.sleep(0.005)
    return RunningAgent(proc, path)
