"""Helpers for model service tests: example programs in sandboxes and a scripted owner."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scripted import answer
from tumbler.modelservice import AsyncModelBridge, EpisodeEnded, ModelCall

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EVENT_TIMEOUT_S = 30.0


@pytest.fixture
def agent_sandbox(make_sandbox):
    """A sandbox with the example agent programs in /root."""
    def make(**kwargs):
        sb = make_sandbox(**kwargs)
        for name in ("urllib_agent.py", "openai_agent.py"):
            sb.write_file(f"/root/{name}", (EXAMPLES / name).read_text())
        return sb
    return make


async def serve_until_ended(bridge: AsyncModelBridge, episodes: int) -> list[EpisodeEnded]:
    """Answer every call with the scripted guess until `episodes` episodes ended."""
    ended = []
    while len(ended) < episodes:
        event = await bridge.next_event(EVENT_TIMEOUT_S)
        if isinstance(event, ModelCall):
            await event.respond(answer(event.messages), token_ids=[7, 8, 9],
                                logprobs=[-0.5, -0.25, -0.125])
        elif isinstance(event, EpisodeEnded):
            ended.append(event)
    return ended


async def next_of(bridge: AsyncModelBridge, kind: type, timeout_s: float = EVENT_TIMEOUT_S):
    """The next event of this kind (others are dropped)."""
    async def find():
        while not isinstance(event := await bridge.next_event(timeout_s), kind):
            pass
        return event
    return await asyncio.wait_for(find(), timeout_s)
