"""The last commands each session ran through the server, with the tail of their output.

The agent keeps no output once a command has answered, so a viewer (the console at /ui, or
anyone calling GET .../sessions/{name}/history) could not see what a session has been doing.
The server keeps a small, bounded record per session instead: the last COMMANDS commands, each
with the last OUTPUT_TAIL bytes of its output. Memory per sandbox is capped (at most SESSIONS
sessions are tracked; the least recently used is forgotten), and the record goes when the
sandbox is stopped, reset or removed (its sessions are gone then too).
"""
from __future__ import annotations

from collections import OrderedDict, deque

from tumbler.models import CommandResult

COMMANDS = 20          # commands kept per session
OUTPUT_TAIL = 4096     # bytes of output kept per command (its end)
COMMAND_TEXT = 1024    # characters of the command's own text kept
SESSIONS = 32          # sessions tracked per sandbox


class SessionHistory:
    """Per sandbox, per session: a bounded deque of finished commands (plain dicts)."""

    def __init__(self):
        self._by_sandbox: dict[str, OrderedDict[str, deque]] = {}

    def record(self, sandbox_id: str, session: str, command: str, result: CommandResult,
               started: float, output: bytes) -> None:
        """Remember one finished command; `output` is what it wrote (its tail is kept)."""
        sessions = self._by_sandbox.setdefault(sandbox_id, OrderedDict())
        entries = sessions.get(session)
        if entries is None:
            entries = sessions[session] = deque(maxlen=COMMANDS)
            if len(sessions) > SESSIONS:
                sessions.popitem(last=False)
        else:
            sessions.move_to_end(session)
        entries.append({"command": command[:COMMAND_TEXT], "started": started,
                        "output_tail": output[-OUTPUT_TAIL:],
                        "output_size": result.output_size or len(output),
                        "exit_code": result.exit_code, "timed_out": result.timed_out,
                        "duration_s": result.duration_s})

    def entries(self, sandbox_id: str, session: str) -> list[dict]:
        """Oldest first; empty when the session ran nothing through the server."""
        return list(self._by_sandbox.get(sandbox_id, {}).get(session, ()))

    def drop(self, sandbox_id: str) -> None:
        self._by_sandbox.pop(sandbox_id, None)
