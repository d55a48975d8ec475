"""Runs that an AsyncClient's sessions start at the same moment, sent as one POST /v1/runs.

Many sessions stepped through one client (a trainer's envs, a benchmark's workers) start their
next commands together: each as soon as its last one answered, and the answers come in clumps.
A command is held for one turn of the event loop; the others started in that turn join it, and
if there are any, all go in one request whose reply answers each command as it ends
(`wire.RunsRequest`): what its own run route would have answered, read by the same code, so a
result or an error is the same either way. A lone command goes on its own as before. The HTTP
work of a request (the server's and this client's) is then paid once per batch, not per
command; one slow command holds up no other's answer.

A caller that stops waiting (its task cancelled) has its command interrupted, as a dropped
connection of its own request would have had it.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Iterator

from tumbler import wire
from tumbler.errors import NotFound, ServerUnreachable, TumblerError
from tumbler.ops import DEFAULT_SESSION
from tumbler.sdk import core

log = logging.getLogger(__name__)

RUNS_PATH = f"{wire.API_PREFIX}/runs"
# While other runs of the client are under way, a gathering is held open until the next of
# them is answered (its session's next command then joins), or this long at the most.
HOLD_S = 0.001
HOLD_ANSWERS = 1
# A cancelled run's interrupt is sent again this often while it finds nothing running, for at
# most this long (the server may not have started that command of the batch yet).
INTERRUPT_RETRY_S = 0.1
INTERRUPT_WINDOW_S = 30.0


class _Item:
    __slots__ = ("call", "future", "sent")

    def __init__(self, call: core.Call, future: asyncio.Future | None):
        self.call, self.future, self.sent = call, future, False


class RunBatcher:
    """Gathers the runs one client starts in a turn of the loop (see the module)."""

    def __init__(self, client):
        self.client = client          # an AsyncClient: its _send_now, _fetch and builder
        self.enabled = True           # off once a server says it has no /v1/runs
        self._gathering: list[_Item] | None = None
        self._tasks: set[asyncio.Task] = set()
        self._running = 0             # runs sent and not answered yet
        self._answer: asyncio.Future | None = None   # set at the next answer (see HOLD_S)

    async def run(self, call: core.Call):
        gathering = self._gathering
        loop = asyncio.get_running_loop()
        if gathering is not None:     # another run gathers this turn's: join it
            item = _Item(call, loop.create_future())
            gathering.append(item)
            return await self._wait(item)
        self._gathering = gathering = [_Item(call, None)]
        try:
            await asyncio.sleep(0)    # the runs the other tasks start in this turn join
            deadline = loop.time() + HOLD_S
            for _ in range(HOLD_ANSWERS):   # and those started when the next answers come
                if not self._running or loop.time() >= deadline:
                    break
                if self._answer is None:
                    self._answer = loop.create_future()
                answer = self._answer
                timer = loop.call_at(deadline, _settle, answer)
                try:
                    await answer
                finally:
                    timer.cancel()
                    if self._answer is answer:   # it timed out: the next hold waits anew
                        self._answer = None
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._gathering = None
            self._start(gathering[1:])
            raise
        self._gathering = None
        if len(gathering) == 1:
            self._running += 1
            try:
                return await self.client._send_now(call)   # noqa: SLF001
            finally:
                self._answered()
        gathering[0].future = loop.create_future()
        self._start(gathering)
        return await self._wait(gathering[0])

    def _answered(self, runs: int = 1) -> None:
        self._running -= runs
        answer, self._answer = self._answer, None
        if answer is not None:
            _settle(answer)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing ------------------------------------------------------------------------------

    def _start(self, items: list[_Item]) -> None:
        if not items:
            return
        task = asyncio.ensure_future(self._batch(items) if len(items) > 1 and self.enabled
                                     else self._each(items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait(self, item: _Item):
        try:
            return await item.future
        except asyncio.CancelledError:
            if item.sent:   # it runs on the server: stop it, as a dropped request would
                task = asyncio.ensure_future(self._interrupt(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise

    async def _interrupt(self, item: _Item) -> None:
        await interrupt_cancelled(self.client, item.call, lambda: item.sent)

    async def _each(self, items: list[_Item]) -> None:
        """Each on its own request (one item; or a server without /v1/runs)."""
        async def one(item: _Item) -> None:
            if item.future.done():
                return
            try:
                item.future.set_result(await self.client._send_now(item.call))   # noqa: SLF001
            except asyncio.CancelledError:
                if not item.future.done():
                    item.future.cancel()
                raise
            except BaseException as exc:   # the caller's own error, raised where it waits
                if not item.future.done():
                    item.future.set_exception(exc)
        await asyncio.gather(*(one(item) for item in items))

    async def _batch(self, items: list[_Item]) -> None:
        items = [item for item in items if not item.future.done()]   # cancelled while gathered
        if len(items) < 2:
            return await self._each(items)
        body = b'{"runs":[' + b",".join(item_json(item.call) for item in items) + b"]}"
        call = core.Call("POST", RUNS_PATH, core._none, content=body,   # noqa: SLF001
                         content_type="application/json",
                         timeout=max(item.call.timeout for item in items))
        frames = _Frames(items, self._answered)
        for item in items:
            item.sent = True
        self._running += len(items)
        try:
            status, content = await self.client._fetch(call, frames.feed)   # noqa: SLF001
        except BaseException as exc:
            frames.fail(lambda: exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        if status != 200:
            # The route never answers 404 or 405 itself (a missing sandbox is a frame's): the
            # server has no /v1/runs (an older one; its 404 may carry a Tumbler error body).
            if status in (404, 405):
                self.enabled = False
                for item in items:
                    if item.sent:
                        item.sent = False
                        self._answered()
                return await self._each([item for item in items if not item.future.done()])
            frames.fail(lambda: core.error_for(core.Reply(status, content)))
            return
        frames.fail(lambda: ServerUnreachable(
            "the server ended a batch of runs without answering this one"))


class _Frames:
    """The reply of POST /v1/runs, cut into its frames as chunks arrive; each answers its item."""

    def __init__(self, items: list[_Item], answered):
        self.items = items
        self.buf = bytearray()
        self.answered = answered   # RunBatcher._answered: one run fewer under way

    def feed(self, data: bytes) -> None:
        self.buf += data
        try:
            for index, status, content in cut_frames(self.buf):
                if not 0 <= index < len(self.items):
                    raise ValueError(index)
                item = self.items[index]
                if item.sent:
                    item.sent = False   # answered: nothing left to interrupt
                    self.answered()
                if not item.future.done():
                    settle(item.future, item.call, status, content)
        except ValueError:
            raise ServerUnreachable("the server's reply to a batch of runs is out of step (a "
                                    "frame line that names no command)") from None

    def fail(self, error) -> None:
        """Every item not answered yet fails with error() (a fresh exception each)."""
        for item in self.items:
            if item.sent:
                item.sent = False
                self.answered()
            if not item.future.done():
                item.future.set_exception(error())


async def interrupt_cancelled(client, call: core.Call, running) -> None:
    """Interrupt a cancelled run's command, sent in a batch or on a stream. The server may not
    have started it yet (a batch's other commands answered first; the stream's line still on
    its way), so an interrupt can come too early and find the session idle, or not made yet
    (the first command on a fresh sandbox makes the default session: CI saw that NotFound end
    the retries, and `sleep 60` ran on): it is sent again while `running()` says the command
    is unanswered, until one finds it running, or INTERRUPT_WINDOW_S pass."""
    sandbox_id, session = call.run_of
    session = session or DEFAULT_SESSION
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(INTERRUPT_WINDOW_S, call.timeout)
    while running():
        try:
            if await client._send_now(core.interrupt(sandbox_id, session)):   # noqa: SLF001
                return
        except NotFound:
            pass   # its session is not there yet: as good as idle
        except TumblerError as exc:
            log.debug("interrupt of %s/%s after a cancelled run: %s", sandbox_id, session, exc)
            return
        if loop.time() >= deadline:
            return
        await asyncio.sleep(INTERRUPT_RETRY_S)


def cut_frames(buf: bytearray) -> Iterator[tuple[int, int, bytes]]:
    """(index, status, content) of each whole frame at the start of `buf` (a batch's or a
    stream's reply: a line `INDEX STATUS LENGTH`, then LENGTH bytes), cut off as it is read;
    ValueError for a line that is not three numbers."""
    pos = 0
    try:
        while (nl := buf.find(b"\n", pos)) >= 0:
            index, status, length = (int(x) for x in buf[pos:nl].split())
            if len(buf) - nl - 1 < length:
                return
            content = bytes(buf[nl + 1:nl + 1 + length])
            pos = nl + 1 + length
            yield index, status, content
    finally:
        del buf[:pos]


def settle(future: asyncio.Future, call: core.Call, status: int, content: bytes) -> None:
    """Answer a run's future from its frame, read as its own request's reply would be."""
    try:
        future.set_result(core.finish(call, core.Reply(status, content)))
    except Exception as exc:   # noqa: BLE001 (raised where the caller waits)
        future.set_exception(exc)


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def item_json(call: core.Call) -> bytes:
    """The batch's item (`wire.RunItem`) for a run Call: its RunRequest body (a JSON object)
    with where it runs put first."""
    sandbox_id, session = call.run_of
    body, _ = call.body_and_headers()
    return b'{"sandbox_id":%s,"session":%s,%s' % (
        json.dumps(sandbox_id).encode(), json.dumps(session).encode(), body[1:])
