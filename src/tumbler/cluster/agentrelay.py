"""A node host's agent relay: the server's cluster mode reaches each sandbox's agent over one TCP
connection to its node host instead of one Ray actor call per agent op.

    relay = AgentRelay(socket_of=host.socket_if_running)     # on the node host, in its loop
    address = await relay.start("10.0.0.7")                    # "10.0.0.7:40123"
    # on the server: AsyncAgentClient(..., connect=dial(address, relay.token, sandbox_id))

A connection opens with one line, `TUMBLER-AGENT1 <token> <sandbox id>\\n`; the relay checks the
token (the host's secret, known to the server through Ray, never to a sandbox), connects to that
sandbox's agent socket and from then on copies bytes both ways, unparsed. What the agent sends
is checked where it always is, by the caller's `AsyncAgentClient` (its caps per call, its
header cap, its timeouts); the relay buffers no more than the kernel's socket buffers and one
read, since a side whose peer does not take its writes stops being read (flow control).

Anything wrong in the opening line (no token, a wrong one, a sandbox the host does not run) and
the relay closes the connection: the caller sees the agent hang up (AgentGone), and finds out
from the host why (the server then asks whether the node host lives: `NodeLost` if not).
Measured, per command, this is the path a single-node server takes to a local agent plus one
loopback or LAN hop; through Ray each op was an actor call (~3-5 ms on two cores).
"""
from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from typing import Callable

log = logging.getLogger(__name__)

MAGIC = b"TUMBLER-AGENT1"
MAX_LINE = 256              # the opening line's most bytes (magic, 64 hex digits, an id)
OPEN_TIMEOUT_S = 5.0        # for the opening line to arrive, and for the agent to accept
HIGH_WATER = 1 << 20        # bytes queued for one side before the other is no longer read

SocketOf = Callable[[str], "str | None"]


def opening(token: str, sandbox_id: str) -> bytes:
    """The line a connection to the relay starts with."""
    return b"%s %s %s\n" % (MAGIC, token.encode(), sandbox_id.encode())


class AgentRelay:
    """Accepts the server's connections to the agents of one node host's sandboxes."""

    def __init__(self, socket_of: SocketOf):
        self.token = secrets.token_hex(32)
        self._socket_of = socket_of     # sandbox id -> its agent socket, None if not running
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[_Side] = set()
        self._joining: set[asyncio.Task] = set()

    async def start(self, host: str, port: int = 0) -> str:
        """Listen on `host` (the node's address the server reaches) -> "HOST:PORT"."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Opening(self), host, port)
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        return f"{sock_host}:{sock_port}"

    def close(self) -> None:
        """Stop listening and drop every connection (their callers see a hang-up)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._joining):
            task.cancel()
        for side in list(self._pairs):
            side.transport.abort()
        self._pairs.clear()

    @property
    def connections(self) -> int:
        return len(self._pairs) // 2

    def _agent_socket(self, line: bytes) -> str | None:
        """The agent socket an opening line names, or None if it is not a valid one."""
        parts = line.split(b" ")
        if len(parts) != 3 or parts[0] != MAGIC:
            return None
        if not hmac.compare_digest(parts[1], self.token.encode()):
            return None
        try:
            sandbox_id = parts[2].decode("ascii")
        except UnicodeDecodeError:
            return None
        return self._socket_of(sandbox_id) if sandbox_id.isalnum() else None

    def _joined(self, caller: "_Opening", path: str, rest: bytes) -> None:
        task = asyncio.ensure_future(self._join(caller, path, rest))
        self._joining.add(task)
        task.add_done_callback(self._joining.discard)

    async def _join(self, caller: "_Opening", path: str, rest: bytes) -> None:
        """Connect the caller to the agent at `path`, then splice them."""
        loop = asyncio.get_running_loop()
        outer = caller.transport
        try:
            agent_t, agent = await asyncio.wait_for(
                loop.create_unix_connection(_Side, path), OPEN_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError) as exc:
            log.info("agent relay: cannot reach %s: %s", path, exc)
            outer.abort()
            return
        if outer.is_closing():
            agent_t.close()
            return
        near = _Side()
        outer.set_protocol(near)
        near.connection_made(outer)
        near.pair(agent, self._pairs)
        if rest:
            agent_t.write(rest)
        outer.resume_reading()


class _Side(asyncio.Protocol):
    """One end of a splice: what it reads goes to its peer's transport."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self._pairs: set | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def pair(self, peer: "_Side", pairs: set) -> None:
        self.peer, peer.peer = peer, self
        self._pairs = peer._pairs = pairs
        pairs.update((self, peer))

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)

    def eof_received(self):
        return False   # a half-close ends the splice: connection_lost closes the peer

    def connection_lost(self, exc) -> None:
        if self._pairs is not None:
            self._pairs.discard(self)
        peer = self.peer
        if peer is not None:
            self.peer = None
            if peer.transport is not None and not peer.transport.is_closing():
                peer.transport.close()

    # Flow control: this side's writes are backed up, so its peer stops reading.
    def pause_writing(self) -> None:
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and not self.peer.transport.is_closing():
            self.peer.transport.resume_reading()


class _Opening(asyncio.Protocol):
    """A new connection until its opening line is read and checked."""

    def __init__(self, relay: AgentRelay):
        self.relay = relay
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._done = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buf += data
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > MAX_LINE:
                self._refuse()
            return
        line, rest = bytes(self._buf[:end]), bytes(self._buf[end + 1:])
        self._done = True
        self._timer.cancel()
        path = self.relay._agent_socket(line) if end <= MAX_LINE else None  # noqa: SLF001
        if path is None:
            self._refuse()
            return
        self.transport.pause_reading()   # until the agent's side is connected
        self.relay._joined(self, path, rest)  # noqa: SLF001

    def _refuse(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        self.transport.abort()

    def connection_lost(self, exc) -> None:
        if self._timer is not None:
            self._timer.cancel()


def dial(address: str, token: str, sandbox_id: str):
    """A `connect` for AsyncAgentClient: a TCP connection to the relay at "HOST:PORT", opened
    with the line that names `sandbox_id`."""
    host, _, port = address.rpartition(":")
    line = opening(token, sandbox_id)

    async def connect(protocol_factory):
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_connection(protocol_factory, host, int(port))
        transport.write(line)
        return transport, proto
    return connect
