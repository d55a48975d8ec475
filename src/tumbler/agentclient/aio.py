"""An asyncio client of the in-sandbox agent: one unix-socket connection, many requests on it.

    client = AsyncAgentClient("/run/tumbler/sb-1/agent.sock", on_lost=mark_dead)
    result, output = await client.call("exec", {"argv": ["true"]}, timeout=30)

Speaks `protocol.py` frames. Requests carry ids; one reader task routes each reply (and the
output events before it) to the waiting call. Multiplexing lets one connection serve every
concurrent request to a sandbox without a thread per call (the server, the model bridge).
Raises the same errors as the blocking `client.py`. Standard library only, relative imports only
(this folder also runs inside sandboxes), like the rest of the package.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Callable

from tumbler.agent.protocol import HEADER, MAX_HEADER
from tumbler.agentclient.blocking import MAX_EVENTS, AgentGone, reply_limit, reply_of

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
STREAM_LIMIT = 1 << 20   # bytes of read buffer in the StreamReader

OnEvent = Callable[[dict, bytes], None]
OnLost = Callable[[], None]


class _Pending:
    __slots__ = ("future", "on_event", "room", "events")

    def __init__(self, future: asyncio.Future, on_event: OnEvent | None, room: int):
        self.future = future
        self.on_event = on_event
        self.room = room          # body bytes the call may still receive (events and reply)
        self.events = 0


class _Hostile(ConnectionError):
    """The agent sent more than a call asked for: the connection is dropped."""


class AsyncAgentClient:
    """Calls ops on one agent over one multiplexed connection, reconnecting when it drops.

    on_lost() runs on the loop when the agent hangs up the connection (not after close()): the
    agent dies, so its owner can learn it at once instead of at the next call.
    """

    def __init__(self, path: str, on_lost: OnLost | None = None):
        self.path = path
        self.on_lost = on_lost
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._connect_lock = asyncio.Lock()
        self._closed = False

    async def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = 60.0, on_event: OnEvent | None = None,
                   max_reply: int | None = None) -> tuple[dict, bytes]:
        """Send one request and wait up to `timeout` seconds for its reply -> (result, body).

        `timeout` bounds the whole call, events included. max_reply: the most body bytes
        accepted, reply and events together (default `reply_limit(op, args)`); a frame over it
        drops the connection, as a hostile agent's would.
        Raises AgentRequestError for an error reply, AgentGone when the agent is gone or sent
        more than asked for, TimeoutError when no reply came in time (the connection stays usable).
        """
        writer = await self._connection()
        self._next_id += 1
        rid = self._next_id
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        room = reply_limit(op, args or {}) if max_reply is None else max_reply
        self._pending[rid] = _Pending(future, on_event, room)
        head = _dumps({"id": rid, "op": op, "args": args or {}}).encode()
        timer = None
        try:
            writer.write(HEADER.pack(len(head), len(body)) + head + body if len(body) < 1 << 16
                         else HEADER.pack(len(head), len(body)) + head)
            if len(body) >= 1 << 16:
                writer.write(body)   # not copied into one buffer with the header
            if writer.transport.get_write_buffer_size() > 1 << 16:
                await writer.drain()
            # A timer that fails the future, not asyncio.wait_for: the same timeout for a
            # fraction of the CPU (wait_for adds a second future and two callbacks per call).
            timer = loop.call_later(timeout, _expire, future)
            header, reply_body = await future
        except asyncio.TimeoutError:
            raise TimeoutError(f"agent did not answer {op} within {timeout} s") from None
        except (ConnectionError, OSError) as exc:
            raise AgentGone(f"agent at {self.path} hung up during {op}: {exc}") from None
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(rid, None)
        return reply_of(header, reply_body, op, self.path)

    async def close(self) -> None:
        self._closed = True
        await self._drop(AgentGone("client closed"))

    async def _connection(self) -> asyncio.StreamWriter:
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        async with self._connect_lock:
            if self._closed:
                raise AgentGone(f"client for {self.path} is closed")
            if self._writer is None or self._writer.is_closing():
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_unix_connection(self.path, limit=STREAM_LIMIT),
                        CONNECT_TIMEOUT_S)
                except (OSError, asyncio.TimeoutError) as exc:
                    raise AgentGone(f"cannot connect to the agent at {self.path}: {exc}") from None
                self._writer = writer
                self._reader_task = asyncio.create_task(self._read_loop(reader, writer))
        return self._writer

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head_len, body_len = HEADER.unpack(await reader.readexactly(HEADER.size))
                if head_len > MAX_HEADER:
                    raise _Hostile(f"agent sent a frame header of {head_len} bytes")
                header = json.loads(await reader.readexactly(head_len))
                if not isinstance(header, dict):
                    raise _Hostile("agent sent a frame header that is not an object")
                rid = header.get("id")
                pending = self._pending.get(rid) if isinstance(rid, int) else None
                if pending is None:  # a reply to a call that timed out or was cancelled
                    await _discard(reader, body_len)
                    continue
                # The length is checked against what the call asked for before a byte of the
                # body is read: a hostile agent cannot make the host buffer more.
                if body_len > pending.room:
                    raise _Hostile(f"agent sent a {body_len}-byte body where at most "
                                   f"{pending.room} bytes were asked for")
                body = await reader.readexactly(body_len) if body_len else b""
                pending.room -= body_len
                if "event" in header:
                    pending.events += 1
                    if pending.events > MAX_EVENTS:
                        raise _Hostile(f"agent sent more than {MAX_EVENTS} events for one call")
                    if pending.on_event is not None:
                        pending.on_event(header, body)
                elif not pending.future.done():
                    pending.future.set_result((header, body))
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ValueError) as exc:
            if self._writer is writer:
                self._writer = None
            writer.close()
            self._fail_pending(ConnectionError(f"connection lost: {exc or 'closed'}"))
            if self.on_lost is not None and not self._closed:
                self.on_lost()

    async def _drop(self, exc: Exception) -> None:
        writer, self._writer = self._writer, None
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
        if writer is not None:
            writer.close()
        self._fail_pending(exc)

    def _fail_pending(self, exc: Exception) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(exc)


_dumps = json.JSONEncoder(separators=(",", ":")).encode   # json.dumps's, made once


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())


async def _discard(reader: asyncio.StreamReader, n: int) -> None:
    """Skip n bytes of the stream without holding more than a chunk of them."""
    while n > 0:
        n -= len(await reader.readexactly(min(n, STREAM_LIMIT)))
