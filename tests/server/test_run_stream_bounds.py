"""The run stream's bounds, on `server.runstream.RunStream` with a stand-in service whose
commands run until released: what a client cannot make the server hold or do."""
from __future__ import annotations

import asyncio
import json

from tumbler import wire
from tumbler.models import CommandResult
from tumbler.sdk.runs import cut_frames
from tumbler.server.runstream import RunStream


class Service:
    """Commands that end when `release` is set; `spawn` runs the interrupts."""

    def __init__(self):
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.interrupted: list[str] = []

    async def run(self, sandbox_id, session, command, *, timeout, max_output):
        self.started.append(command)
        await self.release.wait()
        return CommandResult(output_bytes=command.encode(), exit_code=0, duration_s=0.0)

    def start_run(self, sandbox_id, session, command, *, timeout, max_output, done):
        """The service's way for a sandbox whose agent connection is open (the other,
        run(), is taken by a sandbox's first command)."""
        async def ends():
            done(await self.run(sandbox_id, session, command, timeout=timeout,
                                max_output=max_output), None)
        self.spawn(ends())
        return True

    async def interrupt(self, sandbox_id, session):
        self.interrupted.append(sandbox_id)
        return True

    def spawn(self, coro):
        return asyncio.ensure_future(coro)


def _line(index: int, command: str = "true") -> bytes:
    return b"%d %s\n" % (index, json.dumps({"sandbox_id": "sb", "command": command}).encode())


class Wire:
    """The ASGI side: body messages fed in, reply messages collected and cut into frames."""

    def __init__(self):
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.sent: list[dict] = []

    async def receive(self):
        return await self.incoming.get()

    async def send(self, message):
        self.sent.append(message)

    def body(self, data: bytes, more: bool = True) -> None:
        self.incoming.put_nowait({"type": "http.request", "body": data, "more_body": more})

    def frames(self) -> dict[int, tuple[int, bytes]]:
        content = bytearray(b"".join(m.get("body", b"") for m in self.sent[1:]))
        return {index: (status, body) for index, status, body in cut_frames(content)}


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_commands_past_the_limit_under_way_are_refused_and_indexes_in_use_too():
    async def scenario():
        svc, w = Service(), Wire()
        serving = asyncio.ensure_future(RunStream(svc, 1 << 16, asyncio.Event()).serve(
            w.receive, w.send))
        w.body(b"".join(_line(i) for i in range(wire.MAX_RUNS + 1)) + _line(0))
        await _settle()
        assert len(svc.started) == wire.MAX_RUNS
        frames = w.frames()
        assert frames[wire.MAX_RUNS][0] == 429 and frames[0][0] == 409, frames
        svc.release.set()
        w.body(b"", more=False)
        await _settle()
        w.incoming.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(serving, 5)
        assert w.sent[-1]["more_body"] is False
        assert sum(status == 200 for status, _ in w.frames().values()) == wire.MAX_RUNS
    asyncio.run(scenario())


def test_a_line_too_long_or_without_its_index_ends_the_stream():
    async def scenario(data: bytes, says: bytes):
        svc, w = Service(), Wire()
        serving = asyncio.ensure_future(RunStream(svc, 1000, asyncio.Event()).serve(
            w.receive, w.send))
        w.body(data)
        await asyncio.wait_for(serving, 5)
        status, body = w.frames()[-1]
        assert status == 400 and says in body, body
        assert svc.started == []
    asyncio.run(scenario(b"x" * 2000, b"over 1000 bytes"))
    asyncio.run(scenario(b'{"sandbox_id": "sb"}\n', b"index"))


def test_a_stopping_server_runs_nothing_new_and_ends_once_the_running_answered():
    async def scenario():
        svc, w, stopping = Service(), Wire(), asyncio.Event()
        serving = asyncio.ensure_future(RunStream(svc, 1 << 16, stopping).serve(w.receive, w.send))
        w.body(_line(1, "first"))
        await _settle()
        stopping.set()
        w.body(_line(2, "second"))
        await _settle()
        assert svc.started == ["first"] and not serving.done()
        svc.release.set()
        await asyncio.wait_for(serving, 5)
        frames = w.frames()
        assert frames[1][0] == 200 and frames[2][0] == 503, frames
    asyncio.run(scenario())


def test_a_client_that_hangs_up_has_what_runs_interrupted():
    async def scenario():
        svc, w = Service(), Wire()
        serving = asyncio.ensure_future(RunStream(svc, 1 << 16, asyncio.Event()).serve(
            w.receive, w.send))
        w.body(_line(1, "sleep 60"))
        await _settle()
        w.incoming.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(serving, 5)
        await _settle()
        assert svc.interrupted == ["sb"]
    asyncio.run(scenario())
