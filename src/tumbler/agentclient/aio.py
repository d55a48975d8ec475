"""An asyncio client of the in-sandbox agent: one unix-socket connection, many requests on it.

    client = AsyncAgentClient("/run/tumbler/sb-1/agent.sock", on_lost=mark_dead)
    result, output = await client.call("exec", {"argv": ["true"]}, timeout=30)

Speaks `protocol.py` frames. Requests carry ids; the connection's protocol cuts frames from
what arrives and routes each reply (and the output events before it) to the waiting call. Multiplexing lets one connection serve every
concurrent request to a sandbox without a thread per call (the server, the model bridge).
Raises the same errors as the blocking `client.py`. Standard library only, relative imports only
(this folder also runs inside sandboxes), like the rest of the package.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

from tumbler.agent.protocol import HEADER, MAX_HEADER
from tumbler.agentclient.blocking import MAX_EVENTS, AgentGone, reply_limit, reply_of

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0

OnEvent = Callable[[dict, bytes], None]
OnLost = Callable[[], None]
# How a connection other than to a unix socket is opened (a node host's relay, in the server's
# cluster mode): protocol factory -> awaitable (transport, protocol), as loop.create_connection.
Connect = Callable[[Callable[[], asyncio.Protocol]], Awaitable[tuple]]


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

    def __init__(self, path: str, on_lost: OnLost | None = None, connect: Connect | None = None):
        self.path = path          # the agent's socket, or (with `connect`) where it is reached
        self.on_lost = on_lost
        self._connect = connect
        self._proto: _FrameProtocol | None = None
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
        future = self.start(op, args, body, timeout=timeout, on_event=on_event, max_reply=max_reply)
        if future is None:
            await self._connection()
            future = self.start(op, args, body, timeout=timeout, on_event=on_event,
                                max_reply=max_reply)
            if future is None:
                raise AgentGone(f"agent at {self.path} hung up before {op} was sent")
        try:
            proto = self._proto
            if proto is not None and proto.paused:
                await proto.drain()
            await future
        except (ConnectionError, OSError):   # TimeoutError too: outcome() says each
            if not future.done():   # the drain failed first
                future.cancel()
                raise AgentGone(f"agent at {self.path} hung up during {op}") from None
        except asyncio.CancelledError:
            future.cancel()   # no one waits for it now: its pending entry and timer go
            raise
        return self.outcome(future, op)

    def start(self, op: str, args: dict | None = None, body: bytes = b"", *, timeout: float,
              on_event: OnEvent | None = None, max_reply: int | None = None) -> asyncio.Future | None:
        """Send one request on the open connection now -> the future of its reply, to be read
        with outcome(); None when no connection is open (call() opens one). For callers that
        answer from a done callback instead of a task per request (the server's run stream:
        a task and its chain of coroutines cost ~30 us of CPU a call)."""
        proto = self._proto
        if proto is None or proto.transport.is_closing():
            return None
        self._next_id += 1
        rid = self._next_id
        loop = proto.loop   # not get_running_loop(): on 3.11 a getpid() system call each
        future = loop.create_future()
        room = reply_limit(op, args or {}) if max_reply is None else max_reply
        self._pending[rid] = _Pending(future, on_event, room)
        head = _dumps({"id": rid, "op": op, "args": args or {}}).encode()
        transport = proto.transport
        if len(body) < 1 << 16:
            transport.write(HEADER.pack(len(head), len(body)) + head + body)
        else:
            transport.write(HEADER.pack(len(head), len(body)) + head)
            transport.write(body)   # not copied into one buffer with the header
        # A timer that fails the future, not asyncio.wait_for: the same timeout for a
        # fraction of the CPU (wait_for adds a second future and two callbacks per call).
        timer = loop.call_later(timeout, _expire, future)
        future.add_done_callback(lambda _f: (timer.cancel(), self._pending.pop(rid, None)))
        return future

    def outcome(self, future: asyncio.Future, op: str) -> tuple[dict, bytes]:
        """(result, body) of a request start() sent, once its future is done; or raises
        AgentRequestError, AgentGone, or TimeoutError (as call() does)."""
        if future.cancelled():   # never by this client; by whoever holds a start()ed future
            raise AgentGone(f"the request {op} to the agent at {self.path} was cancelled")
        exc = future.exception()
        if isinstance(exc, asyncio.TimeoutError):
            raise TimeoutError(f"agent did not answer {op} in time") from None
        if isinstance(exc, (ConnectionError, OSError)):
            raise AgentGone(f"agent at {self.path} hung up during {op}: {exc}") from None
        if exc is not None:
            raise exc
        header, reply_body = future.result()
        return reply_of(header, reply_body, op, self.path)

    async def close(self) -> None:
        self._closed = True
        await self._drop(AgentGone("client closed"))

    async def _connection(self) -> "_FrameProtocol":
        async with self._connect_lock:
            if self._closed:
                raise AgentGone(f"client for {self.path} is closed")
            if self._proto is None or self._proto.transport.is_closing():
                loop = asyncio.get_running_loop()
                factory = lambda: _FrameProtocol(self)  # noqa: E731
                opening = (self._connect(factory) if self._connect is not None else
                           loop.create_unix_connection(factory, self.path))
                try:
                    _, proto = await asyncio.wait_for(opening, CONNECT_TIMEOUT_S)
                except (OSError, asyncio.TimeoutError) as exc:
                    raise AgentGone(f"cannot connect to the agent at {self.path}: {exc}") from None
                self._proto = proto
        return self._proto

    def _lost(self, proto: "_FrameProtocol", exc: Exception) -> None:
        """The connection `proto` ended (the agent hung up, or sent what was not asked for)."""
        if self._proto is not proto:
            return   # an old connection, closed by us
        self._proto = None
        self._fail_pending(exc)
        if self.on_lost is not None and not self._closed:
            self.on_lost()

    async def _drop(self, exc: Exception) -> None:
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.transport.close()
        self._fail_pending(exc)

    def _fail_pending(self, exc: Exception) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(exc)


class _FrameProtocol(asyncio.Protocol):
    """The read side of one connection: frames cut from what arrives and routed to their
    calls as they complete, in the loop's own callback (no reader task, no per-read await).
    The caps are checked before a byte of what they bound is kept: a header over MAX_HEADER,
    or a body over what its call may still receive, drops the connection."""

    def __init__(self, client: AsyncAgentClient):
        self.client = client
        self.loop = asyncio.get_running_loop()   # made by the loop's connect, on the loop
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self._drained: asyncio.Future | None = None
        self._buf = bytearray()
        self._skip = 0            # body bytes still to drop (a reply nobody waits for)
        self._frame: tuple | None = None   # (header, pending, body_len) awaiting its body

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return
            data = data[self._skip:]
            self._skip = 0
        buf += data
        try:
            self._frames()
        except _Hostile as exc:
            self.transport.abort()
            self.client._lost(self, ConnectionError(f"connection lost: {exc}"))  # noqa: SLF001

    def _frames(self) -> None:
        buf = self._buf
        pos, end = 0, len(buf)
        try:
            while True:
                if self._frame is None:
                    if end - pos < HEADER.size:
                        return
                    head_len, body_len = HEADER.unpack_from(buf, pos)
                    if head_len > MAX_HEADER:
                        raise _Hostile(f"agent sent a frame header of {head_len} bytes")
                    if end - pos - HEADER.size < head_len:
                        return
                    start = pos + HEADER.size
                    try:
                        header = json.loads(buf[start:start + head_len])
                    except ValueError as exc:
                        raise _Hostile(f"agent sent a frame header that is not JSON: {exc}") from None
                    if not isinstance(header, dict):
                        raise _Hostile("agent sent a frame header that is not an object")
                    pos = start + head_len
                    rid = header.get("id")
                    pending = self.client._pending.get(rid) if isinstance(rid, int) else None  # noqa: SLF001
                    if pending is None:   # a reply to a call that timed out or was cancelled
                        if end - pos >= body_len:
                            pos += body_len
                        else:
                            self._skip = body_len - (end - pos)
                            pos = end
                        continue
                    # The length is checked against what the call asked for before a byte of
                    # the body is kept: a hostile agent cannot make the host buffer more.
                    if body_len > pending.room:
                        raise _Hostile(f"agent sent a {body_len}-byte body where at most "
                                       f"{pending.room} bytes were asked for")
                    self._frame = (header, pending, body_len)
                header, pending, body_len = self._frame
                if end - pos < body_len:
                    return
                body = bytes(buf[pos:pos + body_len]) if body_len else b""
                pos += body_len
                self._frame = None
                pending.room -= body_len
                if "event" in header:
                    pending.events += 1
                    if pending.events > MAX_EVENTS:
                        raise _Hostile(f"agent sent more than {MAX_EVENTS} events for one call")
                    if pending.on_event is not None:
                        pending.on_event(header, body)
                elif not pending.future.done():
                    pending.future.set_result((header, body))
        finally:
            if pos:
                del buf[:pos]

    def eof_received(self) -> bool:
        return False   # close: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionError("connection lost"))
        self.client._lost(self, ConnectionError(f"connection lost: {exc or 'closed'}"))  # noqa: SLF001

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drain(self) -> None:
        if not self.paused:
            return
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        await self._drained


_dumps = json.JSONEncoder(separators=(",", ":")).encode   # json.dumps's, made once


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(asyncio.TimeoutError())
