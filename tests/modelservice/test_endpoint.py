"""The endpoint as a program in the sandbox sees it: routes, bad input, timeouts, streaming."""
from __future__ import annotations

import asyncio
import json

import pytest

from scripted import next_of
from tumbler.modelservice import AsyncModelBridge, ModelCall

# Sends each (method, path, body) to $OPENAI_BASE_URL and prints [[status, body], ...].
CLIENT = r"""
import json, os, sys, urllib.request, urllib.error
base = os.environ["OPENAI_BASE_URL"]
out = []
for method, path, body in json.loads(sys.argv[1]):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else body.encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out.append([r.status, r.headers["Content-Type"], r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.headers["Content-Type"], e.read().decode()])
print(json.dumps(out))
"""


def send(sb, env: dict, *cases) -> list:
    result = sb.exec(["python3", "-c", CLIENT, json.dumps(cases)], env=env, timeout=60)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.asyncio
async def test_models_and_bad_requests_get_openai_style_answers(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge(models=("policy", "ref")) as bridge:
        env = await bridge.attach(sb)
        replies = await asyncio.to_thread(
            send, sb, env,
            ["GET", "/models", None],
            ["POST", "/chat/completions", "{not json"],
            ["POST", "/chat/completions", "[1, 2]"],
            ["POST", "/chat/completions", '{"model": "policy"}'],
            ["POST", "/chat/completions", '{"messages": []}'],
            ["POST", "/chat/completions", '{"messages": [{"content": "no role"}]}'],
            ["POST", "/chat/completions", '{"messages": [{"role": "user"}], "model": 3}'],
            ["POST", "/chat/completions", '{"messages": [{"role": "user"}], "stream": "yes"}'],
            ["POST", "/completions", '{"prompt": "legacy"}'],
            ["GET", "/nothing", None])
        with pytest.raises(TimeoutError):
            await bridge.next_event(0.2)   # none of them reached the owner
    status, ctype, body = replies[0]
    assert (status, ctype) == (200, "application/json")
    assert [m["id"] for m in json.loads(body)["data"]] == ["policy", "ref"]
    for status, ctype, body in replies[1:8]:
        error = json.loads(body)["error"]
        assert (status, error["type"], error["code"]) == (400, "invalid_request_error", "invalid_request")
        assert error["message"]
    assert "not valid JSON" in json.loads(replies[1][2])["error"]["message"]
    assert "'messages'" in json.loads(replies[3][2])["error"]["message"]
    for status, ctype, body in replies[8:]:
        assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


@pytest.mark.asyncio
async def test_owner_that_never_answers_times_the_call_out(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge(call_timeout_s=1.0) as bridge:
        env = await bridge.attach(sb)
        reply = asyncio.create_task(asyncio.to_thread(
            send, sb, env, ["POST", "/chat/completions", '{"messages": [{"role": "user", "content": "hi"}]}']))
        call = await next_of(bridge, ModelCall)     # delivered, and ignored
        [[status, _, body]] = await asyncio.wait_for(reply, 10)
        error = json.loads(body)["error"]
        assert (status, error["type"], error["code"]) == (504, "timeout", "model_timeout")
        assert "did not answer within 1 s" in error["message"]
        for _ in range(100):                         # the expiry reaches the recording
            if bridge.trajectories()[0].exchanges[0].status:
                break
            await asyncio.sleep(0.02)
        assert bridge.trajectories()[0].exchanges[0].status == 504
        assert await call.respond("late") is False


@pytest.mark.asyncio
async def test_streamed_answer_is_openai_chunks(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        env = await bridge.attach(sb)
        request = {"model": "policy", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        reply = asyncio.create_task(asyncio.to_thread(
            send, sb, env, ["POST", "/chat/completions", json.dumps(request)]))
        call = await next_of(bridge, ModelCall)
        assert call.stream and call.params == {"model": "policy", "stream": True}
        tool = {"id": "t1", "type": "function", "function": {"name": "guess", "arguments": "{}"}}
        assert await call.respond("hello", tool_calls=[tool], token_ids=[1, 2])
        [[status, ctype, body]] = await asyncio.wait_for(reply, 10)
    assert (status, ctype) == (200, "text/event-stream")
    events = [line[6:] for line in body.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["content"] == "hello"
    assert chunks[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "guess"
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[2]["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_owner_error_reaches_the_program(agent_sandbox):
    sb = agent_sandbox()
    async with AsyncModelBridge() as bridge:
        env = await bridge.attach(sb)
        reply = asyncio.create_task(asyncio.to_thread(
            send, sb, env, ["POST", "/chat/completions", '{"messages": [{"role": "user"}]}']))
        call = await next_of(bridge, ModelCall)
        assert await call.fail("context too long", status=400, kind="invalid_request_error",
                               code="context_length_exceeded")
        with pytest.raises(Exception, match="answered already"):
            await call.respond("twice")
        [[status, _, body]] = await asyncio.wait_for(reply, 10)
    assert status == 400 and json.loads(body)["error"]["code"] == "context_length_exceeded"
