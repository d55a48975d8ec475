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
from tumbler.sdk.transport import parse_head

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
        self._writer: asyncio.StreamWriter | None = None
        self._opening: asyncio.Future | None = None
        self._reader: asyncio.Task | None = None
        self._runs: dict[int, _Run] = {}   # sent and not answered, by index
        self._next = 0
        self._pending: list[bytes] = []    # lines started in this turn of the loop
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
        loop = asyncio.get_running_loop()
        index = self._next = self._next + 1
        run = self._runs[index] = _Run(call, loop.create_future(), loop.time() + call.timeout)
        if not self._pending:
            loop.call_soon(self._flush)
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
        writer, self._writer = self._writer, None
        self._closed = "the client was closed with this command under way"
        if writer is not None:
            self._pending.clear()   # their runs fail below, with the reader
            if not self._runs:
                try:   # a clean end of the body first: nothing is left to answer
                    writer.write(b"0\r\n\r\n")
                except (OSError, RuntimeError):
                    pass
            writer.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper, self._sweep_at = None, math.inf
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- plumbing ------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the lines started in this turn of the loop as one chunk."""
        if not self._pending or self._writer is None:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))

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

    async def _open(self) -> asyncio.StreamWriter | None:
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._connect())
        opening = self._opening
        try:
            return await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None

    async def _connect(self) -> asyncio.StreamWriter | None:
        client = self.client
        call = core.Call("POST", wire.RUN_STREAM_PATH, core._none, content=b"",   # noqa: SLF001
                         content_type="application/x-ndjson", timeout=OPEN_TIMEOUT_S)
        head, _, host, port = client._builder.raw(call, chunked=True)   # noqa: SLF001
        for attempt in range(client.retries + 1):
            try:
                conn, _ = await client._transport._acquire(   # noqa: SLF001
                    None, OPEN_TIMEOUT_S, fresh=True, host=host, port=port)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == client.retries:
                    raise ServerUnreachable(f"cannot reach the server at {client.url}: {exc}") from None
                await asyncio.sleep(core.backoff_s(attempt))
        reader, writer = conn.reader, conn.writer
        writer.write(head)
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), OPEN_TIMEOUT_S)
            status, _headers, length, chunked, _ = parse_head(raw)
            content = b"" if chunked or not length else await asyncio.wait_for(
                reader.readexactly(length), OPEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            writer.close()
            log.warning("the server at %s did not open a run stream within %.0f s (a proxy "
                        "that buffers request bodies?): commands go in batches", client.url,
                        OPEN_TIMEOUT_S)
            self.enabled = False
            return None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            writer.close()
            raise ServerUnreachable(f"connection to {client.url} failed opening the run "
                                    f"stream: {exc!r}") from None
        if status != 200 or not chunked:
            writer.close()
            if status in (404, 405):   # a server without the route (it never answers 404)
                self.enabled = False
                return None
            raise core.error_for(core.Reply(status, content))
        self._writer, self._closed = writer, None
        self._reader = asyncio.ensure_future(self._read(reader, writer))
        return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer each run from its frame, until the reply ends or the connection fails."""
        buf = bytearray()
        why = "the server ended the run stream without answering this command"
        try:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    break
                buf += (await reader.readexactly(size + 2))[:-2]
                self._answer(buf)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            why = f"the run stream's connection to {self.client.url} failed: {exc!r}"
        except ServerUnreachable as exc:
            why = exc.message
        finally:
            if self._writer is writer:
                self._writer = None
                self._pending.clear()   # lines of runs that fail here: never sent
            writer.close()
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
