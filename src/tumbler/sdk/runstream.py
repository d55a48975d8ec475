"""An AsyncClient's commands on one long-lived request, POST /v1/runs/stream.

Many sessions stepped through one client (a trainer's envs, a benchmark's workers) send a
command each as soon as their last one answered. Each on its own request, or gathered into a
`POST /v1/runs` batch, pays an HTTP request's work on both sides per command or per batch, and
a batch holds a command back while it gathers. Here one request stays open: its chunked body
carries a line per command (`INDEX JSON`, the command's `wire.RunItem`) the moment it starts,
the lines started in one turn of the loop in one write, and its chunked reply answers each
command as it ends with the same frame a batch's reply has (`INDEX STATUS LENGTH`, then what
the command's own run route would have answered), read by the same code, so a result or an
error is the same whichever way it went.

A caller that stops waiting (its task cancelled), or whose command's deadline passes, has the
command interrupted. If the stream's connection fails, every command on it fails with
ServerUnreachable (a command may or may not have run, as with a request whose connection
dropped) and the next command opens a new stream. A server without the route (an older one),
or a proxy that holds the body back until it ends, makes the client fall back to batches.
"""
from __future__ import annotations

import asyncio
import logging
import math

import httpx

from tumbler import wire
from tumbler.errors import CommandTimeout, ServerUnreachable
from tumbler.sdk import core
from tumbler.sdk.runs import cut_frames, interrupt_cancelled, item_json, settle
from tumbler.sdk.transport import MAX_HEAD, connect_tcp, parse_head

log = logging.getLogger(__name__)

# Seconds for the server to answer the stream's head: one that does not (a proxy that buffers
# request bodies whole) cannot carry a stream, and the client goes back to batches.
OPEN_TIMEOUT_S = 5.0


class _Run:
    __slots__ = ("call", "future", "deadline")

    def __init__(self, call: core.Call, future: asyncio.Future, deadline: float):
        self.call, self.future, self.deadline = call, future, deadline


class RunStream:
    """The stream of one AsyncClient (see the module); `run(call)` for a command's Call."""

    def __init__(self, client):
        self.client = client           # an AsyncClient: its _builder, _transport, _send_now
        self.enabled = True            # off once the server or the path cannot carry a stream
        self._writer: asyncio.Transport | None = None
        self._proto: _StreamProtocol | None = None
        self._opening: asyncio.Future | None = None
        self._runs: dict[int, _Run] = {}   # sent and not answered, by index
        self._next = 0
        self._pending: list[bytes] = []    # lines started in this turn of the loop
        self._flushing = False             # a _flush is queued
        self._tasks: set[asyncio.Task] = set()
        self._closed: str | None = None    # why, once the client is closed
        # One timer for the runs' deadlines, at the nearest: a timer per run (made, then
        # cancelled at its answer) cost ~8% of the client's CPU a command.
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf          # when it fires

    async def run(self, call: core.Call):
        writer = self._writer
        if writer is None:
            writer = await self._open()
            if writer is None:             # no stream to this server: the caller goes on without
                return await self.client._send_without_stream(call)   # noqa: SLF001
        loop = self._proto.loop
        index = self._next = self._next + 1
        run = self._runs[index] = _Run(call, loop.create_future(), loop.time() + call.timeout)
        self._queue_flush()
        self._pending.append(b"%d %s\n" % (index, item_json(call)))
        if run.deadline < self._sweep_at:
            self._arm(loop, run.deadline)
        try:
            return await run.future
        except asyncio.CancelledError:
            if index in self._runs:   # it runs on the server (until its frame comes): stop it
                self._stop(index)
            raise

    async def close(self) -> None:
        """End the stream. Commands still under way are interrupted by the server (the client
        hung up) and raise ServerUnreachable here, as requests on a closed pool would."""
        writer = self._writer
        self._closed = "the client was closed with this command under way"
        if writer is not None:
            self._pending.clear()   # their runs fail below
            if not self._runs:
                try:   # a clean end of the body first: nothing is left to answer
                    writer.write(b"0\r\n\r\n")
                except (OSError, RuntimeError):
                    pass
        if self._proto is not None:
            self._ended(self._proto, self._closed)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper, self._sweep_at = None, math.inf
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the lines started in this turn of the loop as one chunk."""
        self._flushing = False
        if not self._pending or self._writer is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _queue_flush(self) -> None:
        """One _flush on the loop's queue for the lines of this turn. Queued when a chunk's frames
        answer runs too, behind their tasks' wake-ups: the lines those tasks start then go in
        one chunk, in the same turn."""
        if not self._flushing:
            self._flushing = True
            self._proto.loop.call_soon(self._flush)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._sweeper, self._sweep_at = loop.call_at(when, self._sweep), when

    def _sweep(self) -> None:
        """Runs past their deadline raise CommandTimeout and are interrupted; the timer is set
        again for the nearest deadline left."""
        self._sweeper, self._sweep_at = None, math.inf
        loop = asyncio.get_running_loop()
        now, nearest = loop.time(), None
        for index, run in list(self._runs.items()):
            if run.future.done():
                continue
            if run.deadline <= now:
                run.future.set_exception(CommandTimeout(
                    f"no reply to the run of {run.call.path} within {run.call.timeout} s"))
                self._stop(index)
            elif nearest is None or run.deadline < nearest:
                nearest = run.deadline
        if nearest is not None:
            self._arm(loop, nearest)

    def _stop(self, index: int) -> None:
        """Interrupt the command of a run no one waits for, while its frame has not come."""
        self._spawn(interrupt_cancelled(self.client, self._runs[index].call,
                                        lambda: index in self._runs))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> asyncio.Transport | None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None

    async def _connect(self) -> asyncio.Transport | None:
        client = self.client
        call = core.Call("POST", wire.RUN_STREAM_PATH, core._none, content=b"",   # noqa: SLF001
                         content_type="application/x-ndjson", timeout=OPEN_TIMEOUT_S)
        head, _, host, port = client._builder.raw(call, chunked=True)   # noqa: SLF001
        loop = asyncio.get_running_loop()
        for attempt in range(client.retries + 1):
            try:
                transport, proto = await connect_tcp(lambda: _StreamProtocol(self, loop),
                                                     host, port, OPEN_TIMEOUT_S)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == client.retries:
                    raise ServerUnreachable(f"cannot reach the server at {client.url}: {exc}") from None
                await asyncio.sleep(core.backoff_s(attempt))
        transport.write(head)
        try:
            status, chunked, content = await asyncio.wait_for(asyncio.shield(proto.opened),
                                                              OPEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            transport.close()
            log.warning("the server at %s did not open a run stream within %.0f s (a proxy "
                        "that buffers request bodies?): commands go in batches", client.url,
                        OPEN_TIMEOUT_S)
            self.enabled = False
            return None
        except (OSError, ValueError, httpx.RemoteProtocolError) as exc:
            transport.close()
            raise ServerUnreachable(f"connection to {client.url} failed opening the run "
                                    f"stream: {exc!r}") from None
        if status != 200 or not chunked:
            transport.close()
            if status in (404, 405):   # a server without the route (it never answers 404)
                self.enabled = False
                return None
            raise core.error_for(core.Reply(status, content))
        self._writer, self._closed, self._proto = transport, None, proto
        proto.streaming()
        return transport

    def _ended(self, proto: "_StreamProtocol", why: str) -> None:
        """The stream's connection is over (`why`): every run on it fails with
        ServerUnreachable; the next run opens a new stream."""
        if self._proto is not proto:
            return   # an older stream's, or one that never opened
        self._proto = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._pending.clear()   # lines of runs that fail here: never sent
        runs, self._runs = self._runs, {}
        for run in runs.values():
            if not run.future.done():
                run.future.set_exception(ServerUnreachable(self._closed or why))

    def _answer(self, buf: bytearray) -> None:
        """Every whole frame in `buf` answers its run (and is cut off)."""
        try:
            for index, status, content in cut_frames(buf):
                if index < 0:   # about the stream itself: the server ends it
                    raise ServerUnreachable(core.error_for(core.Reply(status, content)).message)
                run = self._runs.pop(index, None)
                if run is not None and not run.future.done():   # else no one waits for it
                    settle(run.future, run.call, status, content)
        except ValueError:
            raise ServerUnreachable("the server's run stream is out of step (a frame line "
                                    "that is not INDEX STATUS LENGTH)") from None


class _StreamProtocol(asyncio.Protocol):
    """The stream's connection, read in the loop's own callback: the reply's head (`opened`,
    with the content of a reply that is not the stream), then its chunks, whose frames answer
    their runs as they arrive. No reader task: each chunk costs no task step, and the runs
    answered by one chunk have their next lines sent in the same turn of the loop (the flush
    is queued after their tasks' wake-ups)."""

    def __init__(self, stream: RunStream, loop: asyncio.AbstractEventLoop):
        self.stream, self.loop = stream, loop
        self.opened: asyncio.Future = loop.create_future()   # (status, chunked, content)
        self.transport: asyncio.Transport | None = None
        self._raw = bytearray()     # bytes not cut yet: the head, or chunk framing
        self._frames = bytearray()  # the chunks' data, cut into frames as they complete
        self._head: tuple | None = None    # (status, length) of a reply that is not chunked
        self._chunk = -1            # data bytes (+2 for its CRLF) still to come of this chunk
        self._streaming = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def streaming(self) -> None:
        """The stream is open: what came after the head is chunks."""
        self._streaming = True
        self._chunks()

    def data_received(self, data: bytes) -> None:
        self._raw += data
        if not self._streaming:
            if not self.opened.done():
                try:
                    self._opening()
                except (ValueError, httpx.RemoteProtocolError) as exc:
                    self.transport.abort()
                    self.opened.set_exception(exc)
            return
        try:
            self._chunks()
        except (ValueError, ServerUnreachable) as exc:
            why = exc.message if isinstance(exc, ServerUnreachable) else (
                f"the run stream's reply from {self.stream.client.url} is not chunked frames: {exc}")
            self.transport.abort()
            self.stream._ended(self, why)   # noqa: SLF001

    def _opening(self) -> None:
        raw = self._raw
        if self._head is None:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                if len(raw) > MAX_HEAD:
                    raise ValueError(f"a reply head over {MAX_HEAD} bytes")
                return
            status, _headers, length, chunked, _ = parse_head(bytes(raw[:end + 4]))
            del raw[:end + 4]
            if chunked:
                self.opened.set_result((status, True, b""))
                return   # the rest is chunks, read once the stream is open
            self._head = (status, length or 0)
        status, length = self._head
        if len(raw) >= length:
            self.opened.set_result((status, False, bytes(raw[:length])))

    def _chunks(self) -> None:
        raw, frames, answered = self._raw, self._frames, False
        pos = 0
        try:
            while True:
                if self._chunk < 0:   # a size line
                    nl = raw.find(b"\r\n", pos)
                    if nl < 0:
                        if len(raw) - pos > 1024:
                            raise ValueError("a chunk size line over 1 KiB")
                        return
                    size = int(bytes(raw[pos:nl]).split(b";")[0], 16)
                    pos = nl + 2
                    if size == 0:
                        raise ServerUnreachable("the server ended the run stream without "
                                                "answering this command")
                    self._chunk = size + 2
                take = min(self._chunk, len(raw) - pos)
                if take <= 0:
                    return
                # the chunk's data goes to the frames, its closing CRLF nowhere
                data_end = pos + min(take, max(self._chunk - 2, 0))
                frames += raw[pos:data_end]
                answered = True
                pos += take
                self._chunk -= take
                if self._chunk == 0:
                    self._chunk = -1
        finally:
            del raw[:pos]
            if answered:
                self.stream._answer(frames)   # noqa: SLF001
                self.stream._queue_flush()   # noqa: SLF001

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost: {exc or 'closed'}"))
            self.opened.exception()   # retrieved: no "never retrieved" warning if no one waits
        self.stream._ended(self, f"the run stream's connection to {self.stream.client.url} "   # noqa: SLF001
                                 f"failed: {exc!r}" if exc else
                           f"the run stream's connection to {self.stream.client.url} was closed")
