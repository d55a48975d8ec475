"""Recording: every exchange of an episode in order, exported as JSONL trajectories.

One line per episode:

    {"sandbox_id", "episode_id", "exit_code", "reason", "duration_s", "output",
     "exchanges": [{"call_id", "request", "response", "status", "token_ids", "logprobs",
                    "latency_s", "api", "native_request", "native_response"}]}

request is what the program sent; response what it got back (a chat.completion, or an error
body with status >= 400); token_ids and logprobs are the answering side's, when it gave them.
Both are in OpenAI's chat form whatever API the program called: api names it ("openai" or
"anthropic"), and for an "anthropic" call native_request and native_response hold the
Messages API bodies that crossed the wire.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable


@dataclasses.dataclass
class Exchange:
    """One call and its answer. status 0 while unanswered; latency_s: seconds from arrival
    at the bridge to the answer."""

    call_id: str
    request: dict
    response: dict | None = None
    status: int = 0
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    latency_s: float | None = None
    api: str = "openai"
    native_request: dict | None = None
    native_response: dict | None = None


@dataclasses.dataclass
class Trajectory:
    """An episode: its exchanges in the order the calls arrived, and how it ended."""

    sandbox_id: str
    episode_id: str
    exchanges: list[Exchange] = dataclasses.field(default_factory=list)
    exit_code: int | None = None
    reason: str | None = None           # None while the episode runs
    duration_s: float | None = None
    output: str = ""

    @property
    def ended(self) -> bool:
        return self.reason is not None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Trajectory":
        exchanges = [Exchange(**e) for e in data.get("exchanges", [])]
        return cls(**{**data, "exchanges": exchanges})


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path) -> int:
    """Write one JSON line per trajectory; returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for t in trajectories:
            fh.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[Trajectory]:
    with open(path, encoding="utf-8") as fh:
        return [Trajectory.from_dict(json.loads(line)) for line in fh if line.strip()]
