"""Many sessions through one AsyncClient: their commands go on one long-lived POST
/v1/runs/stream, or (the stream off) the commands they start together as one POST /v1/runs;
either way each is answered as it ends, with the result or error it would have had alone."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from checks import IMAGE
from server_process import TOKEN
from tumbler import wire
from tumbler.errors import Conflict, NotFound
from tumbler.models import CommandResult
from tumbler.sdk import AsyncSandbox, core


def _paths(client) -> list[str]:
    """The path of every request `client` makes from now on (the list grows as it sends)."""
    seen, fetch = [], client._fetch

    async def recording(call, on_chunk=None):
        seen.append(call.path)
        return await fetch(call, on_chunk)
    client._fetch = recording
    return seen


def test_sessions_started_together_go_as_one_batch(new_aclient):
    async def scenario():
        client = new_aclient(run_stream=False)
        boxes = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client) for _ in range(3)))
        try:
            named = await boxes[0].session("second")
            seen = _paths(client)
            results = await asyncio.gather(
                *(sb.run(f"cd /tmp; X={i}; printf 'a\\tb%d\\r\\n' {i}; (exit {i})")
                  for i, sb in enumerate(boxes)), named.run("Y=7; printf '\\xff\\x00'"))
            assert seen == [f"{wire.API_PREFIX}/runs"], seen
            for i, r in enumerate(results[:3]):
                assert (r.output_bytes, r.exit_code, r.timed_out) == (f"a\tb{i}\r\n".encode(), i, False)
            assert results[3].output_bytes == b"\xff\x00"
            again = await asyncio.gather(*(sb.run("echo $X $PWD") for sb in boxes),
                                         named.run("echo $Y"))
            assert [r.output for r in again] == ["0 /tmp\n", "1 /tmp\n", "2 /tmp\n", "7\n"]
            lone = await boxes[0].run("echo alone")   # nothing to gather: its own request
            assert lone.output == "alone\n" and seen[-1].endswith("/run"), seen
        finally:
            await asyncio.gather(*(sb.remove() for sb in boxes))
            await client.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("stream", [True, False])
def test_a_slow_command_holds_up_no_other_answer(new_aclient, stream):
    async def scenario():
        client = new_aclient(run_stream=stream)
        slow_box, fast_box = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client)
                                                    for _ in range(2)))
        try:
            started = time.monotonic()

            async def timed(run):
                result = await run
                return result, time.monotonic() - started
            (slow, slow_s), (fast, fast_s) = await asyncio.gather(
                timed(slow_box.run("sleep 2; echo slow")), timed(fast_box.run("echo fast")))
            assert (slow.output, fast.output) == ("slow\n", "fast\n")
            assert fast_s < 1.5 < slow_s, (fast_s, slow_s)
        finally:
            await asyncio.gather(slow_box.remove(), fast_box.remove())
            await client.close()
    asyncio.run(scenario())


def test_errors_and_timeouts_in_a_batch_are_each_commands_own(new_aclient):
    """Each item raises what its own request raises: the same types on the stream, in a batch
    and each on its own."""
    async def scenario(stream: bool, batch: bool):
        client = new_aclient(run_stream=stream, batch_runs=batch)
        sb = await AsyncSandbox.create(IMAGE, client=client)
        try:
            busy = asyncio.ensure_future(sb.run("sleep 1"))
            await asyncio.sleep(0.3)
            other = await sb.session("other")
            answers = await asyncio.gather(client.send(core.run("nosuch", None, "true", 5, None)),
                                           sb.run("true"), other.run("sleep 5", timeout=0.3),
                                           return_exceptions=True)
            assert isinstance(answers[0], NotFound) and "nosuch" in answers[0].message, answers
            assert isinstance(answers[1], Conflict), answers
            assert answers[2].timed_out and answers[2].exit_code is None, answers
            assert (await busy).exit_code == 0
            return [type(a) for a in answers]
        finally:
            await sb.remove()
            await client.close()
    alone = asyncio.run(scenario(False, False))
    assert asyncio.run(scenario(True, True)) == alone
    assert asyncio.run(scenario(False, True)) == alone


@pytest.mark.parametrize("stream", [True, False])
def test_a_run_whose_caller_stops_waiting_is_interrupted(new_aclient, stream):
    async def scenario():
        client = new_aclient(run_stream=stream)
        boxes = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client) for _ in range(2)))
        try:
            seen = _paths(client)
            stuck = asyncio.ensure_future(boxes[0].run("sleep 60"))
            other = asyncio.ensure_future(boxes[1].run("echo other"))
            assert (await other).output == "other\n"
            assert seen == ([] if stream else [f"{wire.API_PREFIX}/runs"]), seen
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            deadline = time.monotonic() + 10
            while True:   # the interrupt goes out on its own request, just after the cancel
                try:
                    result = await boxes[0].run("echo free")
                    break
                except Conflict:
                    assert time.monotonic() < deadline, "the cancelled command still runs"
                    await asyncio.sleep(0.1)
            assert result.output == "free\n"
        finally:
            await asyncio.gather(*(sb.remove() for sb in boxes))
            await client.close()
    asyncio.run(scenario())


def test_the_runs_route_answers_frames(server, api):
    sb = api.create(IMAGE)
    try:
        body = {"runs": [{"sandbox_id": sb.id, "command": "printf hi"},
                         {"sandbox_id": "nosuch", "command": "true", "text": False}]}
        reply = httpx.post(server.url + "/v1/runs", json=body,
                           headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert reply.status_code == 200 and reply.headers["content-type"] == wire.RUNS_MEDIA_TYPE
        frames, rest = {}, reply.content
        while rest:
            line, rest = rest.split(b"\n", 1)
            index, status, length = map(int, line.split())
            frames[index], rest = (status, rest[:length]), rest[length:]
        assert frames[0][0] == 200 and CommandResult.model_validate_json(frames[0][1]).output == "hi"
        assert frames[1][0] == 404 and b'"not_found"' in frames[1][1]
        bad = httpx.post(server.url + "/v1/runs", json={"runs": [{"command": "x"}]},
                         headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert bad.status_code == 400 and "sandbox_id" in bad.json()["error"]["message"]
        assert httpx.post(server.url + "/v1/runs", json=body, timeout=30).status_code == 401
    finally:
        sb.remove()


def test_a_cancelled_runs_interrupt_outlasts_a_session_not_made_yet(monkeypatch):
    """The first command on a fresh sandbox makes its default session: an interrupt sent before
    that gets NotFound, which used to end the retries (CI: `sleep 60` ran on, the session stayed
    busy). It is retried like an idle session's, until one finds the command running."""
    from tumbler.sdk import core, runs
    monkeypatch.setattr(runs, "INTERRUPT_RETRY_S", 0.001)
    answers = [NotFound("no session 'default'"), False, True]
    sent = []

    class Client:
        async def _send_now(self, call):
            sent.append(call.path)
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
    item = runs._Item(core.run("sb1", None, "sleep 60", 60, None), None)
    item.sent = True
    asyncio.run(runs.RunBatcher(Client())._interrupt(item))
    assert sent == ["/v1/sandboxes/sb1/sessions/default/interrupt"] * 3 and answers == []
