"""POST /v1/runs/stream: an AsyncClient's commands on one long-lived request, each answered as
it ends; its failures, its deadlines, its fallback to batches, and a server's shutdown."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from checks import IMAGE, reap_exited_children
from server_process import TOKEN, AsyncTrackingClient, ServerProcess, leftovers_after
from tumbler import wire
from tumbler.errors import AgentDied, CommandTimeout, Conflict, ServerUnreachable, TumblerError
from tumbler.models import CommandResult
from tumbler.sdk import AsyncSandbox, core
from tumbler.sdk import runs
from tumbler.sdk.runs import cut_frames

AUTH = {"authorization": f"Bearer {TOKEN}"}


def _frames(content: bytes) -> dict[int, tuple[int, bytes]]:
    return {index: (status, body) for index, status, body in cut_frames(bytearray(content))}


def test_many_sessions_share_one_stream_and_get_exact_results(new_aclient):
    async def scenario():
        client = new_aclient()
        fetched, fetch = [], client._fetch

        async def recording(call, on_chunk=None):
            fetched.append(call.path)
            return await fetch(call, on_chunk)
        boxes = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client) for _ in range(3)))
        try:
            named = await boxes[0].session("second")
            client._fetch = recording
            for _ in range(3):
                results = await asyncio.gather(
                    *(sb.run(f"X={i}; printf 'a\\tb%d\\r\\n\\xff' {i}; (exit {i})")
                      for i, sb in enumerate(boxes)), named.run("printf '\\x00'"))
                for i, r in enumerate(results[:3]):
                    assert (r.output_bytes, r.exit_code) == (f"a\tb{i}\r\n".encode() + b"\xff", i)
                assert results[3].output_bytes == b"\x00"
            assert (await boxes[2].run("echo $X")).output == "2\n"
            assert fetched == [], fetched   # no request of its own for any of those commands
            writer = client._stream._writer
            assert writer is not None
            assert (await boxes[1].run("exit 4")).session_alive is False
            assert (await boxes[1].run("echo again")).output == "again\n"   # a fresh default
            assert client._stream._writer is writer   # the same connection all along
        finally:
            await asyncio.gather(*(sb.remove() for sb in boxes))
            await client.close()
    asyncio.run(scenario())


def test_an_agent_killed_under_a_streamed_command_is_agent_died_and_others_carry_on(new_aclient,
                                                                                     runtime):
    """A command on the stream is answered from its agent reply's callback (no task): the
    agent's death mid-command must still answer AgentDied, as the run route alone does."""
    async def scenario():
        client = new_aclient()
        victim, bystander = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client)
                                                   for _ in range(2)))
        try:
            await asyncio.gather(victim.run("true"), bystander.run("true"))   # connections open
            stuck = asyncio.ensure_future(victim.run("sleep 30", timeout=60))
            await asyncio.sleep(0.5)
            os.kill(runtime.init_pid(victim.id), signal.SIGKILL)
            with pytest.raises(AgentDied) as caught:
                await asyncio.wait_for(stuck, 20)
            assert caught.value.status == 502 and "reset" in caught.value.message
            with pytest.raises(AgentDied):
                await victim.run("echo hi")
            assert (await bystander.run("echo fine")).output == "fine\n"
            await victim.reset()
            assert (await victim.run("echo back")).output == "back\n"
        finally:
            await asyncio.gather(victim.remove(), bystander.remove())
            await client.close()
    asyncio.run(scenario())


def test_a_sandbox_removed_under_a_streamed_command_answers_it_with_a_clear_error(new_aclient):
    async def scenario():
        client = new_aclient()
        sb = await AsyncSandbox.create(IMAGE, client=client)
        try:
            await sb.run("true")
            stuck = asyncio.ensure_future(sb.run("sleep 30", timeout=60))
            await asyncio.sleep(0.5)
            await sb.remove()
            with pytest.raises(TumblerError) as caught:
                await asyncio.wait_for(stuck, 20)
            assert caught.value.status != 500, caught.value   # not an internal error
        finally:
            await client.close()
    asyncio.run(scenario())


def test_the_stream_route_answers_lines_as_they_come(server, api):
    """The wire itself, through httpx: a body sent line by line, frames as each ends."""
    sb = api.create(IMAGE)
    try:
        async def body():
            yield b'1 {"sandbox_id": "%s", "command": "sleep 0.3; printf slow"}\n' % sb.id.encode()
            yield b'2 {"sandbox_id": "nosuch", "command": "true"}\n3 {"command": "x"}\n'
            yield b'4 {"sandbox_id": "%s", "session": "s2", "command": "true"}\n' % sb.id.encode()

        async def send():
            async with httpx.AsyncClient(timeout=30) as http:
                reply = await http.post(server.url + wire.RUN_STREAM_PATH, content=body(),
                                        headers=AUTH)
                return reply.status_code, reply.headers["content-type"], reply.content
        status, kind, content = asyncio.run(send())
        assert (status, kind) == (200, wire.RUNS_MEDIA_TYPE)
        frames = _frames(content)
        assert sorted(frames) == [1, 2, 3, 4] and list(frames)[-1] == 1   # the slow one last
        assert CommandResult.model_validate_json(frames[1][1]).output_bytes == b"slow"
        assert frames[2][0] == 404 and b'"not_found"' in frames[2][1]
        assert frames[3][0] == 400 and b"sandbox_id" in frames[3][1]
        assert frames[4][0] == 404 and b"s2" in frames[4][1]   # no such session
        broken = httpx.post(server.url + wire.RUN_STREAM_PATH, content=b"not a line\n",
                            headers=AUTH, timeout=30)
        assert _frames(broken.content)[-1][0] == 400 and b"index" in broken.content
        assert httpx.post(server.url + wire.RUN_STREAM_PATH, content=b"",
                          timeout=30).status_code == 401
    finally:
        sb.remove()


def test_a_run_past_its_deadline_raises_and_is_interrupted(new_aclient):
    async def scenario():
        client = new_aclient()
        sb = await AsyncSandbox.create(IMAGE, client=client)
        try:
            slow = await sb.session("slow")   # a run with a far deadline, started first
            far = asyncio.ensure_future(slow.run("sleep 4", timeout=60))
            await asyncio.sleep(0.1)
            call = core.run(sb.id, None, "sleep 60", 60, None)
            call.timeout = 0.5   # the client's deadline, well before the command's own
            started = time.monotonic()
            with pytest.raises(CommandTimeout):
                await client.send(call)
            assert time.monotonic() - started < 3, "the near deadline waited for the far one"
            assert (await far).exit_code == 0
            deadline = time.monotonic() + 10
            while True:   # the interrupt goes out on its own request just after
                try:
                    assert (await sb.run("echo free")).output == "free\n"
                    break
                except Conflict:
                    assert time.monotonic() < deadline, "the command past its deadline still runs"
                    await asyncio.sleep(0.1)
        finally:
            await sb.remove()
            await client.close()
    asyncio.run(scenario())


@pytest.mark.parametrize("batches", [True, False])
def test_a_server_without_the_stream_gets_batches(new_aclient, monkeypatch, batches):
    """An older server answers the stream's path 404: the client goes on in batches, with the
    same results; one without POST /v1/runs either (a Tumbler server's 404 carries its error
    body) gets each command on its own request."""
    monkeypatch.setattr(wire, "RUN_STREAM_PATH", "/v1/no-such-stream")
    if not batches:
        monkeypatch.setattr(runs, "RUNS_PATH", "/v1/no-such-runs")

    async def scenario():
        client = new_aclient()
        boxes = await asyncio.gather(*(AsyncSandbox.create(IMAGE, client=client) for _ in range(2)))
        try:
            results = await asyncio.gather(*(sb.run("echo hi") for sb in boxes))
            assert [r.output for r in results] == ["hi\n", "hi\n"]
            assert client._stream.enabled is False
            assert client._runs.enabled is batches
        finally:
            await asyncio.gather(*(sb.remove() for sb in boxes))
            await client.close()
    asyncio.run(scenario())


def test_a_dropped_stream_fails_its_runs_and_a_shutdown_does_not_wait_for_it(tmp_path, runtime):
    """SIGTERM with a stream open: the server answers the command under way, ends the stream
    and shuts down at once (not after its 30 s graceful timeout); a SIGKILLed server's runs
    fail with ServerUnreachable, and the next command opens a new stream to its successor."""
    (tmp_path / "state").mkdir()
    srv = ServerProcess(tmp_path / "state").start()
    made: list[str] = []

    async def scenario():
        client = AsyncTrackingClient(srv.url, TOKEN, made)
        sb = await AsyncSandbox.create(IMAGE, client=client)
        assert (await sb.run("echo up")).output == "up\n"
        running = asyncio.ensure_future(sb.run("sleep 1; echo done"))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        srv.proc.send_signal(15)
        assert (await running).output == "done\n"
        code = await asyncio.to_thread(srv.proc.wait, 60)
        assert time.monotonic() - started < 20, "the shutdown waited on the open stream"
        assert code in (0, -15)
        await client.close()

        srv.start()
        client = AsyncTrackingClient(srv.url, TOKEN, made)
        sb = await AsyncSandbox.create(IMAGE, client=client)
        running = asyncio.ensure_future(sb.run("sleep 30"))
        await asyncio.sleep(0.5)
        srv.kill()
        with pytest.raises(ServerUnreachable):
            await running
        srv.start()
        fresh = await AsyncSandbox.create(IMAGE, client=client)
        assert (await fresh.run("echo back")).output == "back\n"
        await client.close()
    try:
        asyncio.run(scenario())
    finally:
        try:
            with httpx.Client(base_url=srv.url, headers=AUTH, timeout=30) as http:
                for sandbox in http.get("/v1/sandboxes").json()["sandboxes"]:
                    http.delete(f"/v1/sandboxes/{sandbox['id']}")
        finally:
            if srv.proc.poll() is None:
                srv.terminate()
    reap_exited_children()   # the inits the killed server left to this (subreaper) process
    for sandbox_id in made:
        assert leftovers_after(runtime, sandbox_id) == [], sandbox_id
