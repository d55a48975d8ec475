"""Agent programs in sandboxes played through the bridge: recording, many at once, faults."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from scripted import answer, next_of, serve_until_ended
from tumbler.modelservice import (AsyncModelBridge, EpisodeEnded, ModelBridge, ModelCall,
                                  SandboxDetached)
from tumbler.modelservice.recording import read_jsonl

AGENT = ["python3", "/root/urllib_agent.py"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.asyncio
async def test_example_episode_is_recorded_in_order(agent_sandbox, tmp_path, stream):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, AGENT + ["--seed", "5"] + (["--stream"] if stream else []))
        [ended] = await serve_until_ended(bridge, 1)
        assert (ended.episode_id, ended.exit_code, ended.reason) == (episode, 0, "exited")
        assert json.loads(ended.output)["solved"] is True
        assert bridge.export_jsonl(tmp_path / "t.jsonl") == 1
    [t] = read_jsonl(tmp_path / "t.jsonl")
    assert (t.sandbox_id, t.episode_id, t.exit_code) == (sb.id, episode, 0)
    turns = json.loads(ended.output)["turns"]
    assert len(t.exchanges) == turns
    for i, x in enumerate(t.exchanges):
        # each request carries the whole conversation so far: 2 + 2 per earlier turn
        assert len(x.request["messages"]) == 2 + 2 * i
        assert x.request["stream"] is stream
        assert x.status == 200 and x.response["choices"][0]["message"]["content"] == answer(x.request["messages"])
        assert x.token_ids == [7, 8, 9] and x.logprobs == [-0.5, -0.25, -0.125]
    assert "Correct!" in t.exchanges[-1].request["messages"][-1]["content"] or turns > 0


def test_sync_bridge_plays_an_episode(agent_sandbox):
    sb = agent_sandbox()
    with ModelBridge() as bridge:
        env = bridge.attach(sb)
        assert env["OPENAI_BASE_URL"].startswith("http://127.0.0.1:")
        episode = bridge.start_episode(sb.id, AGENT + ["--seed", "9"])
        while not isinstance(event := bridge.next_event(timeout_s=30), EpisodeEnded):
            assert event.respond(answer(event.messages)) is True
        assert event.episode_id == episode and event.exit_code == 0
        assert json.loads(event.output)["solved"] is True
        assert bridge.wait_episode(sb.id, episode, timeout_s=1).exit_code == 0


@pytest.mark.asyncio
async def test_many_sandboxes_and_episodes_at_once(agent_sandbox):
    boxes = [agent_sandbox() for _ in range(4)]
    async with AsyncModelBridge() as bridge:
        for sb in boxes:
            await bridge.attach(sb)
        started = [(sb.id, await bridge.start_episode(sb.id, AGENT + ["--seed", str(i * 10 + j)]))
                   for i, sb in enumerate(boxes) for j in range(2)]
        ended = await serve_until_ended(bridge, len(started))
    assert sorted((e.sandbox_id, e.episode_id) for e in ended) == sorted(started)
    assert all(e.exit_code == 0 and json.loads(e.output)["solved"] for e in ended)
    assert len(bridge.trajectories(ended_only=True)) == 8
    assert await bridge.forget_ended() == 8 and bridge.trajectories() == []


@pytest.mark.asyncio
async def test_program_in_a_session_uses_the_default_episode(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        env = await bridge.attach(sb)
        session = sb.session("agent", env=bridge.session_env(sb.id, "mine"))
        run = asyncio.create_task(asyncio.to_thread(session.run, "python3 /root/urllib_agent.py", timeout=30))
        call = await next_of(bridge, ModelCall)
        assert call.episode_id == "mine" and call.sandbox_id == sb.id
        assert await call.respond("\\boxed{50}")
        while not run.done():
            try:
                event = await bridge.next_event(0.5)
            except TimeoutError:
                continue
            await event.respond(answer(event.messages))
        assert '"solved": true' in (await run).output
        assert env["OPENAI_API_KEY"]


CRASH_MID_CALL = """
import os, threading, time, urllib.request, json
body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
url = os.environ["OPENAI_BASE_URL"] + "/chat/completions"
threading.Thread(target=lambda: urllib.request.urlopen(url, body, timeout=60), daemon=True).start()
time.sleep(0.5)
print("crashing", flush=True)
os._exit(3)
"""


@pytest.mark.asyncio
async def test_program_that_crashes_mid_call_ends_its_episode(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, ["python3", "-c", CRASH_MID_CALL])
        call = await next_of(bridge, ModelCall)
        ended = await bridge.wait_episode(sb.id, episode, timeout_s=10)
        assert (ended.exit_code, ended.reason, ended.output) == (3, "exited", "crashing\n")
        assert await call.respond("too late") is False
        [x] = bridge.trajectories()[0].exchanges
        assert x.status == 503 and x.response["error"]["code"] == "episode_ended"


@pytest.mark.asyncio
async def test_hung_program_is_killed_at_its_timeout(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        t0 = time.monotonic()
        episode = await bridge.start_episode(sb.id, "echo started; sleep 600", timeout_s=1)
        ended = await bridge.wait_episode(sb.id, episode, timeout_s=10)
        assert ended.reason == "timeout" and ended.exit_code == 137 and ended.output == "started\n"
        assert 1 <= time.monotonic() - t0 < 5
        # the program's whole process group went with it
        assert "sleep 600" not in sb.exec("ps -eo args").stdout


@pytest.mark.asyncio
async def test_stop_episode_kills_the_program(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, ["sleep", "600"])
        await bridge.stop_episode(sb.id, episode)
        ended = await bridge.wait_episode(sb.id, episode, timeout_s=10)
        assert (ended.reason, ended.exit_code) == ("stopped", 137)


@pytest.mark.asyncio
async def test_sandbox_stopped_mid_call_releases_waiters(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, AGENT)
        call = await next_of(bridge, ModelCall)
        waiter = asyncio.create_task(bridge.wait_episode(sb.id, episode, timeout_s=30))
        t0 = time.monotonic()
        await asyncio.to_thread(sb.stop)
        ended = await asyncio.wait_for(waiter, 10)
        assert ended.reason == "sandbox_gone" and ended.exit_code is None
        detached = await next_of(bridge, SandboxDetached, 10)
        assert detached.sandbox_id == sb.id and time.monotonic() - t0 < 5
        assert await call.respond("\\boxed{1}") is False
        [x] = bridge.trajectories()[0].exchanges
        assert x.status == 503 and x.response["error"]["code"] == "sandbox_gone"


CALL_THEN_WAIT = """
import os, time, urllib.request, urllib.error, json
body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
try:
    urllib.request.urlopen(os.environ["OPENAI_BASE_URL"] + "/chat/completions", body, timeout=60)
except urllib.error.HTTPError as e:
    open("/tmp/status", "w").write(str(e.code) + " " + json.load(e)["error"]["code"])
time.sleep(600)
"""


@pytest.mark.asyncio
async def test_detach_answers_waiting_calls_with_503(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        episode = await bridge.start_episode(sb.id, ["python3", "-c", CALL_THEN_WAIT])
        await next_of(bridge, ModelCall)
        await bridge.detach(sb.id)
        ended = await bridge.wait_episode(sb.id, episode, timeout_s=1)
        assert ended.reason == "detached"
        with pytest.raises(LookupError):
            await bridge.start_episode(sb.id, AGENT)
    for _ in range(50):
        if sb.exec("cat /tmp/status").stdout:
            break
        await asyncio.sleep(0.05)
    assert sb.exec("cat /tmp/status").stdout == "503 endpoint_disabled"
