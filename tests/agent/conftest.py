"""A real agent process per test module."""
from __future__ import annotations

import pytest

from agentproc import RunningAgent, start_agent  # noqa: F401


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    running = start_agent(tmp_path_factory.mktemp("agent"))
    leftover = None
    try:
        yield running
        for s in running.call("session.list")[0]["sessions"]:
            running.call("session.close", {"name": s["name"]})
        leftover = running.wait_for_no_children()
    finally:
        running.client.close()
        running.proc.kill()
        running.proc.wait(5)
    assert leftover == [], f"the agent left children behind: {leftover}"
