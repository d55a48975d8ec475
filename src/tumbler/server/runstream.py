"""POST /v1/runs/stream: one long-lived request that carries a client's commands as it starts
them and answers each as it ends (`wire.RUN_STREAM_PATH`; the SDK's side: `sdk.runstream`).
A batch, POST /v1/runs, is answered by the same code, its commands given at once.

The body is chunked: a line `INDEX JSON` per command (`wire.RunItem`; INDEX the client's, unique
among its commands under way). The reply is chunked too, frames as POST /v1/runs sends them
(`runframes`); the frames of commands that end in one turn of the loop go in one write. The
HTTP request, its auth and the per-request work of both sides are paid once per connection
instead of once per command or batch.

A client that hangs up has its commands still running interrupted; one that ends its body gets
the rest answered, then the reply ends. Once the server is stopping (SIGTERM), commands still
coming are answered 503 unrun and the reply ends when those running have answered, so a
shutdown never waits on a stream. Bounds: a line is at most the JSON body limit (over it, or a
line without its index, the stream ends with a frame `-1 400`), at most `wire.MAX_RUNS`
commands run at once (more are answered 429), and a client that reads its answers slower than
they come has no more commands read until it catches up.
"""
from __future__ import annotations

import asyncio
import functools

from pydantic import ValidationError

from tumbler import wire
from tumbler.server.errors import validation_message
from tumbler.server.routes.sessions import _disconnected, _interrupt_quietly
from tumbler.errors import TumblerError
from tumbler.server.runframes import RUNS_MEDIA_TYPE, answer, error_json, failure, frame, outcome
from tumbler.server.service import DEFAULT_SESSION

# Bytes of answers held for a client that reads them slower than they come; past it, no more
# commands are read until it catches up.
UNSENT_MAX = 16 << 20


_NEVER = asyncio.Event()   # the `stopping` of a batch: never set, never waited on


class BrokenStream(Exception):
    """The body is not lines of `INDEX JSON`: the stream ends, answered with a frame -1."""


class RunStream:
    """One client's stream (see the module): `await RunStream(...).serve(receive, send)`."""

    def __init__(self, svc, max_line: int = 0, stopping: asyncio.Event | None = None):
        self.svc = svc
        self.max_line = max_line
        self.stopping = stopping or _NEVER
        self.running: dict[int, wire.RunItem] = {}
        self.out = bytearray()        # frames not sent yet
        self.ended = False            # the client ended its body
        self.gone = False             # the client hung up
        self.room = asyncio.Event()   # clear while the client is behind on its answers
        self.room.set()
        self._wake: asyncio.Future | None = None
        self._poke_queued = False   # an answer's wake-up of the writer is on the loop's queue
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, receive, send, items: list[wire.RunItem] | None = None) -> None:
        """Answer the stream; or, with `items`, a whole batch (POST /v1/runs, its body read
        already), run at once and answered the same way."""
        self._loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", RUNS_MEDIA_TYPE)]})
        if items is None:
            reader = asyncio.ensure_future(self._read(receive))
        else:
            for index, item in enumerate(items):
                self._run(index, item)
            reader = asyncio.ensure_future(self._ended(receive))
        stop_watch = None
        if self.stopping is not _NEVER:
            stop_watch = asyncio.ensure_future(self.stopping.wait())
            stop_watch.add_done_callback(lambda _f: self._poke())
        try:
            await self._write(send)
        finally:
            reader.cancel()
            if stop_watch is not None:
                stop_watch.cancel()

    # -- the reply -----------------------------------------------------------------------------

    async def _write(self, send) -> None:
        loop = self._loop
        while True:
            if self.gone:   # the client left: interrupt what still runs, answer nobody
                for item in self.running.values():
                    self.svc.spawn(_interrupt_quietly(self.svc, item.sandbox_id,
                                                      item.session or DEFAULT_SESSION))
                return
            closing = self.ended or self.stopping.is_set()
            if not self.out and (self.running or not closing):
                self._wake = loop.create_future()
                await self._wake
                continue
            final = closing and not self.running
            data, self.out[:] = bytes(self.out), b""
            await send({"type": "http.response.body", "body": data, "more_body": not final})
            self.room.set()
            if final:
                return

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _answer(self, index: int, status: int, body: bytes) -> None:
        self.out += frame(index, status, body)
        if len(self.out) > UNSENT_MAX:
            self.room.clear()
        if not self._poke_queued:
            # The writer wakes a turn of the loop later: the agents that answer just after
            # this one join its write (fewer writes, and wake-ups of the client; ~10% less CPU
            # a command in bench_server's aggregate), for one task step, not two.
            self._poke_queued = True
            self._loop.call_soon(self._poke_queued_once)

    def _poke_queued_once(self) -> None:
        self._poke_queued = False
        self._poke()

    # -- the body ------------------------------------------------------------------------------

    async def _read(self, receive) -> None:
        buf = bytearray()
        try:
            while True:
                if not self.room.is_set():
                    await self.room.wait()
                message = await receive()
                if message["type"] == "http.disconnect":
                    return self._hung_up()
                buf += message.get("body", b"")
                pos = 0
                while (nl := buf.find(b"\n", pos)) >= 0:
                    self._start(bytes(buf[pos:nl]))
                    pos = nl + 1
                del buf[:pos]
                if len(buf) > self.max_line:
                    raise BrokenStream(f"a line of the run stream is over {self.max_line} bytes")
                if not message.get("more_body"):
                    break
        except BrokenStream as exc:
            self._answer(-1, 400, error_json("invalid", str(exc)))
        await self._ended(receive)

    async def _ended(self, receive) -> None:
        """The body is over: the rest is answered unless the client leaves first."""
        self.ended = True
        self._poke()
        await _disconnected(receive)
        self._hung_up()

    def _hung_up(self) -> None:
        self.gone = True
        self._poke()

    def _start(self, line: bytes) -> None:
        head, _, doc = line.partition(b" ")
        try:
            index = int(head)
        except ValueError:
            raise BrokenStream("a line of the run stream must start with its index") from None
        try:
            item = wire.RunItem.model_validate_json(doc)
        except ValidationError as exc:
            return self._answer(index, 400, error_json("invalid", validation_message(exc.errors())))
        refused = self._refusal(index)
        if refused is not None:
            return self._answer(index, *refused)
        self._run(index, item)

    def _run(self, index: int, item: wire.RunItem) -> None:
        try:   # on the agent connection now, answered from its reply's callback: no task
            started = self.svc.start_run(item.sandbox_id, item.session, item.command,
                                         timeout=item.timeout, max_output=item.max_output,
                                         done=functools.partial(self._ended_run, index, item))
        except TumblerError as exc:
            return self._answer(index, *failure(exc))
        self.running[index] = item
        if not started:   # the sandbox's first call, or one through a node host
            task = asyncio.get_running_loop().create_task(self.svc.run(
                item.sandbox_id, item.session, item.command, timeout=item.timeout,
                max_output=item.max_output))
            task.add_done_callback(functools.partial(self._done, index, item))

    def _refusal(self, index: int) -> tuple[int, bytes] | None:
        if index in self.running:
            return 409, error_json("conflict", f"run {index} of this stream is still running")
        if len(self.running) >= wire.MAX_RUNS:
            return 429, error_json("capacity", f"{wire.MAX_RUNS} commands are under way on "
                                               "this stream already")
        if self.stopping.is_set():
            return 503, error_json("unreachable", "the server is shutting down; the command "
                                                  "was not run")
        return None

    def _done(self, index: int, item: wire.RunItem, task: asyncio.Task) -> None:
        self._finished(index, *outcome(task, item.text))

    def _ended_run(self, index: int, item: wire.RunItem, result, error) -> None:
        self._finished(index, *(answer(result, item.text) if error is None else failure(error)))

    def _finished(self, index: int, status: int, body: bytes) -> None:
        del self.running[index]
        self._answer(index, status, body)
