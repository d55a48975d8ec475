"""The blocking ModelBridge hands out ModelCalls, so the loop of the async example works as it
is with the awaits taken out (issue 22: it handed out an unexported SyncModelCall that
`isinstance(event, ModelCall)` did not match, and the copied loop never answered)."""
from __future__ import annotations

import json

from scripted import answer
from tumbler.modelservice import EpisodeEnded, ModelBridge, ModelCall

AGENT = ["python3", "/root/urllib_agent.py"]


def test_the_async_examples_loop_works_on_the_blocking_bridge(agent_sandbox):
    sb = agent_sandbox()
    with ModelBridge() as bridge:
        bridge.attach(sb)
        episode = bridge.start_episode(sb.id, AGENT + ["--seed", "3"])
        answered = 0
        while True:
            event = bridge.next_event(timeout_s=30)     # TimeoutError: the test fails
            if isinstance(event, ModelCall):
                assert event.respond(answer(event.messages)) is True
                assert event.answered
                answered += 1
            elif isinstance(event, EpisodeEnded) and event.episode_id == episode:
                break
        assert event.exit_code == 0 and json.loads(event.output)["solved"] is True
        assert answered == json.loads(event.output)["turns"]
