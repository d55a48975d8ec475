"""Anthropic's Messages API through the endpoint: the owner sees OpenAI's form, the program gets
Anthropic's (JSON and SSE, tool_use blocks), and the episode records both."""
from __future__ import annotations

import json

import pytest

from test_remote import server_url  # noqa: F401 - the fixture: a server with the model routes
from tumbler.modelservice import AsyncModelBridge, EpisodeEnded, ModelCall
from tumbler.modelservice import anthropic

# A stdlib client in the sandbox: one tool round trip, non-streamed then streamed.
CLIENT = r'''
import json, os, sys, urllib.request, urllib.error
base = os.environ["ANTHROPIC_BASE_URL"]
def post(path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                 {"content-type": "application/json",
                                  "x-api-key": os.environ["ANTHROPIC_API_KEY"]})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("content-type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read().decode()
tools = [{"name": "bash", "description": "run", "input_schema": {"type": "object"}}]
first = {"model": "claude-x", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
         "tools": tools, "messages": [{"role": "user", "content": "list files"}]}
out = {"first": post("/v1/messages", first)}
msg = json.loads(out["first"][2])
use = [b for b in msg["content"] if b["type"] == "tool_use"][0]
second = dict(first, stream=True, messages=first["messages"] + [
    {"role": "assistant", "content": msg["content"]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                  "content": [{"type": "text", "text": "a.txt"}]}]}])
out["second"] = post("/v1/messages?beta=true", second)
out["count"] = post("/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
out["bad"] = post("/v1/messages", {"model": "m"})
print(json.dumps(out))
'''


def sse_events(text: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def play(bridge: AsyncModelBridge, sandbox_id: str) -> tuple[list[ModelCall], EpisodeEnded]:
    """Run CLIENT as an episode: a tool call first, then text."""
    seen = []
    episode = await bridge.start_episode(sandbox_id, ["python3", "/root/client.py"])
    while not isinstance(event := await bridge.next_event(30), EpisodeEnded):
        assert isinstance(event, ModelCall) and event.api == "anthropic"
        seen.append(event)
        if len(seen) == 1:
            await event.respond("looking", tool_calls=[{
                "id": "call_1", "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": "ls"})}}])
        else:
            await event.respond("there is a.txt")
    assert event.episode_id == episode and event.exit_code == 0, event.output
    return seen, event


@pytest.mark.asyncio
async def test_messages_api_round_trip_with_tools_and_streaming(sandbox):
    sandbox.write_file("/root/client.py", CLIENT)
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sandbox)
        seen, event = await play(bridge, sandbox.id)
    out = json.loads(event.output)
    first, second = seen
    # The owner saw OpenAI's form: system first, tools as functions, the tool result as a tool message.
    assert first.messages == [{"role": "system", "content": "be brief"},
                              {"role": "user", "content": "list files"}]
    assert first.request["tools"][0]["function"]["name"] == "bash"
    assert first.native_request["system"][0]["text"] == "be brief"
    assert second.messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert second.messages[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "a.txt"}
    assert second.stream is True
    status, ctype, body = out["first"]
    msg = json.loads(body)
    assert (status, msg["type"], msg["role"], msg["stop_reason"]) == (200, "message", "assistant", "tool_use")
    assert msg["content"] == [{"type": "text", "text": "looking"},
                              {"type": "tool_use", "id": "call_1", "name": "bash", "input": {"command": "ls"}}]
    status, ctype, body = out["second"]
    assert status == 200 and ctype.startswith("text/event-stream")
    events = sse_events(body)
    assert [name for name, _ in events] == ["message_start", "content_block_start",
                                            "content_block_delta", "content_block_stop",
                                            "message_delta", "message_stop"]
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "there is a.txt"}
    assert events[4][1]["delta"]["stop_reason"] == "end_turn"
    assert out["count"][0] == 200 and json.loads(out["count"][2])["input_tokens"] >= 1
    status, _, body = out["bad"]
    assert status == 400 and json.loads(body)["type"] == "error"
    [t] = bridge.trajectories()
    assert [x.api for x in t.exchanges] == ["anthropic", "anthropic"]
    assert t.exchanges[0].response["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"
    assert t.exchanges[0].native_response["stop_reason"] == "tool_use"
    assert t.exchanges[1].native_request["stream"] is True


@pytest.mark.asyncio
async def test_messages_api_through_a_server(server_url):
    import httpx
    from checks import IMAGE
    from tumbler.sdk.model import HttpEndpoint
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as http:
        reply = await http.post("/v1/sandboxes", json={"image": IMAGE})
        assert reply.status_code == 201, reply.text
        sandbox_id = reply.json()["id"]
        try:
            await http.put(f"/v1/sandboxes/{sandbox_id}/files/content",
                           params={"path": "/root/client.py"}, content=CLIENT.encode())
            async with AsyncModelBridge() as bridge:
                await bridge.attach(HttpEndpoint(server_url, sandbox_id))
                seen, event = await play(bridge, sandbox_id)
        finally:
            await http.delete(f"/v1/sandboxes/{sandbox_id}")
    out = json.loads(event.output)
    assert json.loads(out["first"][2])["content"][1]["type"] == "tool_use"
    assert seen[1].messages[-1]["role"] == "tool"
    assert [x.api for x in bridge.trajectories()[0].exchanges] == ["anthropic", "anthropic"]


def test_streamed_tool_use_and_errors_in_anthropic_shape():
    message = anthropic.from_openai({"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "t1", "function": {"name": "bash", "arguments": "{\"command\": \"pwd\"}"}}]},
        "finish_reason": "tool_calls"}]}, "m")
    assert message["content"] == [{"type": "tool_use", "id": "t1", "name": "bash",
                                   "input": {"command": "pwd"}}]
    from tumbler.agent.modelhost import _anthropic_sse
    events = sse_events(_anthropic_sse(json.dumps(message).encode()).decode())
    start, delta = events[1][1], events[2][1]
    assert start["content_block"] == {"type": "tool_use", "id": "t1", "name": "bash", "input": {}}
    assert json.loads(delta["delta"]["partial_json"]) == {"command": "pwd"}
    assert anthropic.error_of(504, {"error": {"message": "slow"}}) == {
        "type": "error", "error": {"type": "timeout_error", "message": "slow"}}
