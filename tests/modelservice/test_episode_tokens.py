"""Episodes are attributed by unguessable tokens the bridge issues (issue 23, item 5): a program in
the sandbox cannot write into another episode's trajectory, nor squat an episode id."""
from __future__ import annotations

import asyncio
import json

import pytest

from tumbler.modelservice import AsyncModelBridge, ModelCall

# A program inside the sandbox posting one chat completion to a path of its choosing.
POST = """python3 - <<'EOF'
import json, sys, urllib.request, urllib.error
req = urllib.request.Request("http://127.0.0.1:{port}{path}/chat/completions",
    data=json.dumps({{"model": "policy", "messages": [{{"role": "user", "content": "forged"}}]}}).encode(),
    headers={{"content-type": "application/json"}})
try:
    print(urllib.request.urlopen(req, timeout=20).status)
except urllib.error.HTTPError as e:
    print(e.code)
EOF"""


@pytest.mark.asyncio
async def test_forged_episode_paths_are_refused_and_recorded_nowhere(make_sandbox):
    sb = make_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        victim = await bridge.start_episode(sb.id, ["sleep", "30"], episode_id="victim")
        port = bridge._attached(sb.id).port
        token = bridge.session_env(sb.id, "victim")["OPENAI_BASE_URL"].split("/episodes/")[1][:-3]
        assert token != victim and len(token) >= 32
        # by the owner's name of an episode, running or not yet started: both refused
        for name in ("victim", "later"):
            r = await asyncio.to_thread(sb.run, POST.format(port=port, path=f"/episodes/{name}/v1"))
            assert r.output.strip() == "403", r.output
        # the owner starts "later" after the squat attempt: no Conflict
        await bridge.start_episode(sb.id, ["true"], episode_id="later")
        await bridge.stop_episode(sb.id, victim)
        await bridge.wait_episode(sb.id, victim, timeout_s=30)
        trajectories = {t.episode_id: t for t in bridge.trajectories()}
        assert trajectories["victim"].exchanges == []
        assert "later" in trajectories and trajectories["later"].exchanges == []
        assert bridge._events.empty() or not any(
            isinstance(e, ModelCall) for e in bridge._events._queue)   # nothing delivered


@pytest.mark.asyncio
async def test_the_issued_token_reaches_the_owner_as_its_episode(make_sandbox):
    sb = make_sandbox()
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        env = bridge.session_env(sb.id, "mine")
        run = asyncio.create_task(asyncio.to_thread(
            sb.run, POST.format(port=bridge._attached(sb.id).port,
                                path=env["OPENAI_BASE_URL"].split(str(bridge._attached(sb.id).port))[1])))
        call = await bridge.next_event(timeout_s=30)
        assert isinstance(call, ModelCall) and call.episode_id == "mine"
        await call.respond("ok")
        assert (await run).output.strip() == "200"
        [t] = [t for t in bridge.trajectories() if t.episode_id == "mine"]
        assert json.dumps(t.exchanges[0].request).count("forged") == 1
