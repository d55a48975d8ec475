"""Who answers an agent program's model calls: a table of scripted answers, or an upstream server.

A `ScriptedOwner` answers from a table, no LLM: each row says when it applies and what to say.

    [{"when": "report job", "shell": "chmod 755 /opt/report/bin/make-report"},
     {"when": "exit code: 0", "text": "Done."},
     {"tools": false, "text": "{\\"isNewTopic\\": false}", "repeat": true}]

For each call the first unused row that matches answers it, and is used up unless `repeat`.
A row matches when `when` (a regular expression, default: anything) is found in the call's
last message (its text, or a tool result) and `tools` (true: the call offers tools, false: it
offers none, unset: either) agrees. What it says: `text`, and a tool call: `shell` (a command
for whichever shell tool the call offers: bash, Bash, run_shell_command, shell...) or `tool`
with `arguments`. A call no row matches gets `fallback` (text, default "I am done.").
"""
from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tumbler.errors import InvalidRequest

SHELL_TOOLS = ("bash", "Bash", "run_shell_command", "shell", "execute_bash", "terminal")


class Row(BaseModel):
    """One scripted answer (see the module)."""

    model_config = ConfigDict(extra="forbid")

    when: str = ""
    tools: bool | None = None
    text: str | None = None
    shell: str | None = None
    tool: str | None = None
    arguments: dict = {}
    repeat: bool = False


class ScriptedOwner:
    """Answers calls from a table of rows, per episode (each episode uses the table afresh)."""

    def __init__(self, rows: list[dict | Row], *, fallback: str = "I am done."):
        try:
            self.rows = [r if isinstance(r, Row) else Row.model_validate(r) for r in rows]
            self._patterns = [re.compile(r.when, re.S) for r in self.rows]
        except (ValueError, re.error) as exc:
            raise InvalidRequest(f"bad scripted-owner table: {exc}") from None
        self.fallback = fallback
        self._used: dict[tuple[str, str], set[int]] = {}
        self._lock = threading.Lock()
        self.answered: list[tuple[str, int | None]] = []   # (episode, row index) per call

    @classmethod
    def from_file(cls, path: str | Path) -> "ScriptedOwner":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"scripted-owner table {path}: {exc}") from None
        rows = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise InvalidRequest(f"scripted-owner table {path}: a list of rows, or {{\"rows\": [...]}}")
        return cls(rows, **({"fallback": data["fallback"]} if isinstance(data, dict)
                            and "fallback" in data else {}))

    def answer(self, call) -> bool:
        """Answer one ModelCall (sync or async bridge's: a SyncModelCall here)."""
        index = self._pick(call)
        self.answered.append((call.episode_id, index))
        if index is None:
            return call.respond(self.fallback)
        row = self.rows[index]
        tool_calls = None
        name = row.tool or (_shell_tool(call.request) if row.shell is not None else None)
        if name is not None:
            arguments = dict(row.arguments)
            if row.shell is not None:
                arguments.setdefault("command", row.shell)
            tool_calls = [{"id": f"call_{uuid.uuid4().hex[:16]}", "type": "function",
                           "function": {"name": name, "arguments": json.dumps(arguments)}}]
        return call.respond(row.text, tool_calls=tool_calls)

    def _pick(self, call) -> int | None:
        last = _last_text(call.messages)
        has_tools = bool(call.request.get("tools"))
        with self._lock:
            used = self._used.setdefault((call.sandbox_id, call.episode_id), set())
            for i, (row, pattern) in enumerate(zip(self.rows, self._patterns)):
                if i in used or (row.tools is not None and row.tools != has_tools):
                    continue
                if pattern.search(last):
                    if not row.repeat:
                        used.add(i)
                    return i
        return None


class UpstreamOwner:
    """Forward every call to an OpenAI-compatible server (the bridge's proxy mode)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None):
        from tumbler.modelservice import Upstream
        self.upstream = Upstream(base_url, api_key=api_key, model=model)

    def answer(self, call) -> bool:   # never called: the bridge forwards in proxy mode
        return call.fail("no owner answers here: the bridge forwards to its upstream", status=500)


def _shell_tool(request: dict) -> str:
    """The name of the shell tool a call offers (its first, if none has a known name)."""
    names = [(t.get("function") or {}).get("name") for t in request.get("tools") or []]
    for name in SHELL_TOOLS:
        if name in names:
            return name
    if not names:
        raise InvalidRequest("a scripted shell row answered a call that offers no tools")
    return names[0]


def _last_text(messages: list[dict]) -> str:
    if not messages:
        return ""
    content = messages[-1].get("content")
    if isinstance(content, list):   # OpenAI's content parts
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""
