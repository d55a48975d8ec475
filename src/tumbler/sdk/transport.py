"""Lean HTTP/1.1 keep-alive transports for httpx: the SDK's clients are httpx clients, and these
are what they send through (httpx's transport interface: one `handle_request` method).

Why not httpx's default transport: on a 2-core machine its per-request cost (httpcore, h11 and
anyio, ~0.5 ms of CPU) was most of a command's round trip, so the SDK became the bottleneck of
many concurrent sessions. These transports speak only what a Tumbler server needs: plain HTTP/1.1
to one origin, content-length or chunked bodies, streamed responses; pooled connections.
"""
from __future__ import annotations

import asyncio
import socket
import threading
from typing import AsyncIterator, Iterator

import httpx

MAX_HEAD = 64 << 10          # bytes of a response's status line and headers
CHUNK = 64 << 10             # bytes read at once from a streamed body
NO_BODY = (204, 304)         # statuses whose responses never have a body (nor a length)


# -- the wire format, shared ------------------------------------------------------------------

class _StaleConnection(Exception):
    """The connection failed before a single byte of the response came back."""


def request_head(request: httpx.Request, body_len: int) -> bytes:
    target = request.url.raw_path.decode("ascii")
    lines = [f"{request.method} {target} HTTP/1.1"]
    for name, value in request.headers.raw:
        lname = name.lower()
        if lname in (b"content-length", b"transfer-encoding", b"connection"):
            continue
        lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
    if body_len or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {body_len}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool]:
    """-> (status, headers, content_length or None, chunked, keep_alive)."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"bad status line {lines[0][:100]!r}")
    status = int(parts[1])
    if status in NO_BODY or status < 200:
        length = 0
    else:
        length = None
    headers, chunked, keep_alive = [], False, parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip(), value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == b"content-length" and length is None:
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            keep_alive = value.lower() != b"close"
    return status, headers, length, chunked, keep_alive


async def connect_tcp(factory, host: str, port: int, timeout: float | None,
                      request: httpx.Request | None = None) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """A TCP connection with Nagle off, as loop.create_connection(factory, host, port) ->
    (transport, protocol); httpx.ConnectTimeout or httpx.ConnectError when it cannot be made."""
    try:
        transport, proto = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(factory, host, port), timeout)
    except asyncio.TimeoutError:
        raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from None
    except OSError as exc:
        raise httpx.ConnectError(str(exc), request=request) from None
    transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return transport, proto


def _timeouts(request: httpx.Request) -> tuple[float | None, float | None]:
    t = request.extensions.get("timeout") or {}
    return t.get("connect"), t.get("read")


# -- async ------------------------------------------------------------------------------------

class _AsyncConn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        # An idle connection the server closed has seen EOF by now (the loop read it).
        return not self.reader.at_eof() and not self.writer.is_closing() \
            and not self.reader._buffer  # noqa: SLF001 (stray bytes: out of step)

    def close(self) -> None:
        self.writer.close()


class AsyncTumblerTransport(httpx.AsyncBaseTransport):
    """Pooled keep-alive HTTP/1.1 connections to one origin, on asyncio streams."""

    def __init__(self, max_idle: int = 100):
        self.max_idle = max_idle
        self._idle: list[_AsyncConn] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        conn, reused = await self._acquire(request, _timeouts(request)[0])
        try:
            return await self._exchange(request, body, conn)
        except _StaleConnection:
            if not reused:
                raise httpx.ReadError("server closed the connection before answering", request=request)
        # The server had closed that kept-alive connection before reading our request (it
        # closes idle ones): nothing was done, so sending it again on a new one is safe.
        conn, _ = await self._acquire(request, _timeouts(request)[0], fresh=True)
        try:
            return await self._exchange(request, body, conn)
        except _StaleConnection:
            raise httpx.ReadError("server closed the connection before answering", request=request) from None

    async def _exchange(self, request: httpx.Request, body: bytes, conn: "_AsyncConn") -> httpx.Response:
        read_timeout = _timeouts(request)[1]
        try:
            conn.writer.write(request_head(request, len(body)) + body)
            try:
                head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), read_timeout)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                conn.close()
                raise _StaleConnection() from None
            status, headers, length, chunked, keep_alive = parse_head(head)
            if length is not None and not chunked:
                content = await asyncio.wait_for(conn.reader.readexactly(length), read_timeout) \
                    if length else b""
                self._release(conn, keep_alive)
                return httpx.Response(status, headers=headers, content=content,
                                      extensions={"http_version": b"HTTP/1.1"})
        except asyncio.TimeoutError:
            conn.close()
            raise httpx.ReadTimeout(f"no response within {read_timeout} s", request=request) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            raise httpx.ReadError(f"connection failed: {exc!r}", request=request) from None
        return httpx.Response(status, headers=headers,
                              stream=_AsyncBody(self, conn, chunked, keep_alive, read_timeout, request),
                              extensions={"http_version": b"HTTP/1.1"})

    async def fetch(self, head: bytes, body: bytes, host: str, port: int,
                    timeout: float | None, on_chunk=None) -> tuple[int, bytes]:
        """One whole exchange without httpx's Request and Response: send `head` (request line
        and headers, as `core.RequestBuilder.raw` makes them) and `body`, read the reply to its
        end -> (status, body). What `handle_async_request` and then `aread` do, with the same
        errors (httpx's) and the same resend of a request the server never read; building and
        reading httpx's objects cost more CPU than the rest of a command's round trip here.
        `timeout`: seconds for each read, as the read timeout of a Request. `on_chunk(data)`:
        each chunk of a chunked 200 reply as it arrives (the content returned is then empty)."""
        conn, reused = await self._acquire(None, timeout, host=host, port=port)
        try:
            return await self._fetch_on(conn, head, body, timeout, on_chunk)
        except _StaleConnection:
            if not reused:
                raise httpx.ReadError("server closed the connection before answering")
        conn, _ = await self._acquire(None, timeout, fresh=True, host=host, port=port)
        try:
            return await self._fetch_on(conn, head, body, timeout, on_chunk)
        except _StaleConnection:
            raise httpx.ReadError("server closed the connection before answering") from None

    async def _fetch_on(self, conn: "_AsyncConn", head: bytes, body: bytes,
                        timeout: float | None, on_chunk=None) -> tuple[int, bytes]:
        # One timer that closes the connection, not asyncio.wait_for around each read: a
        # read then fails at once, and `expired` says it was the timeout.
        loop = asyncio.get_running_loop()
        expired = False
        timer = None

        def expire() -> None:
            nonlocal expired
            expired = True
            conn.close()

        def arm() -> None:   # re-armed before each read: "no data within timeout", per read
            nonlocal timer
            if timeout is not None:
                if timer is not None:
                    timer.cancel()
                timer = loop.call_later(timeout, expire)
        reader = conn.reader
        try:
            conn.writer.write(head + body)
            arm()
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if expired or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                    raise
                conn.close()
                raise _StaleConnection() from None
            status, _headers, length, chunked, keep_alive = parse_head(raw)
            if status != 200:
                on_chunk = None
            if chunked:
                parts = []
                while True:
                    arm()
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")
                        break
                    arm()
                    data = (await reader.readexactly(size + 2))[:-2]
                    if on_chunk is None:
                        parts.append(data)
                    else:
                        on_chunk(data)
                content = b"".join(parts)
            elif length is None:   # read to the end: the server closes after the body
                parts = []
                while True:
                    arm()
                    data = await reader.read(CHUNK)
                    if not data:
                        break
                    parts.append(data)
                content, keep_alive = b"".join(parts), False
            else:
                content = await reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            conn.close()
            if expired:
                raise httpx.ReadTimeout(f"no response within {timeout} s") from None
            raise httpx.ReadError(f"connection failed: {exc!r}") from None
        finally:
            if timer is not None:
                timer.cancel()
        self._release(conn, keep_alive)
        return status, content

    async def _acquire(self, request: httpx.Request | None, timeout: float | None,
                       fresh: bool = False, host: str | None = None,
                       port: int | None = None) -> tuple[_AsyncConn, bool]:
        """(a connection, whether it was reused from the pool). The origin is the request's,
        or `host` and `port` without one."""
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        if request is not None:
            host, port = request.url.host, request.url.port or 80
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
        transport, proto = await connect_tcp(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                             host, port, timeout, request)
        return _AsyncConn(reader, asyncio.StreamWriter(transport, proto, reader, loop)), False

    def _release(self, conn: _AsyncConn, keep_alive: bool) -> None:
        if keep_alive and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _AsyncBody(httpx.AsyncByteStream):
    """A chunked or read-to-close body, handed out as it arrives."""

    def __init__(self, transport, conn, chunked, keep_alive, timeout, request):
        self.transport, self.conn, self.chunked = transport, conn, chunked
        self.keep_alive, self.timeout, self.request = keep_alive, timeout, request
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self.conn.reader
        try:
            while True:
                if not self.chunked:
                    data = await asyncio.wait_for(reader.read(CHUNK), self.timeout)
                    if not data:
                        self.keep_alive = False
                        break
                    yield data
                    continue
                size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), self.timeout))
                           .split(b";")[0], 16)
                if size == 0:
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), self.timeout)
                    break
                data = await asyncio.wait_for(reader.readexactly(size + 2), self.timeout)
                yield data[:-2]
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout(f"no data within {self.timeout} s", request=self.request) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx.ReadError(f"connection failed mid-body: {exc!r}", request=self.request) from None
        self.done = True

    async def aclose(self) -> None:
        if self.done:
            self.transport._release(self.conn, self.keep_alive)
        else:
            self.conn.close()   # left mid-body: the connection is out of step


# -- sync -------------------------------------------------------------------------------------

class _SyncConn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def read_until(self, sep: bytes, limit: int = MAX_HEAD) -> bytes:
        while sep not in self.buf:
            if len(self.buf) > limit:
                raise httpx.RemoteProtocolError("response head too large")
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exactly(self, n: int) -> bytes:
        if len(self.buf) >= n:
            out, self.buf = self.buf[:n], self.buf[n:]
            return out
        # Straight into one buffer: growing `buf` by += was quadratic (64 MiB took 23 s).
        out = bytearray(n)
        view = memoryview(out)
        got = len(self.buf)
        view[:got] = self.buf
        self.buf = b""
        while got < n:
            k = self.sock.recv_into(view[got:], n - got)
            if not k:
                raise EOFError("server closed the connection")
            got += k
        return bytes(out)

    def read_some(self) -> bytes:
        if self.buf:
            out, self.buf = self.buf, b""
            return out
        return self.sock.recv(CHUNK)

    def _fill(self) -> None:
        data = self.sock.recv(CHUNK)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    def usable(self) -> bool:
        if self.buf:
            return False
        try:
            self.sock.setblocking(False)
            try:
                return self.sock.recv(1, socket.MSG_PEEK) != b""   # data or EOF: stale
            except BlockingIOError:
                return True
            finally:
                self.sock.setblocking(True)
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


class TumblerTransport(httpx.BaseTransport):
    """Pooled keep-alive HTTP/1.1 connections to one origin, on blocking sockets. Thread-safe."""

    def __init__(self, max_idle: int = 100):
        self.max_idle = max_idle
        self._idle: list[_SyncConn] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        conn, reused = self._acquire(request, _timeouts(request)[0])
        try:
            return self._exchange(request, body, conn)
        except _StaleConnection:
            if not reused:
                raise httpx.ReadError("server closed the connection before answering", request=request)
        # As in the async transport: the server closed the idle connection unread; resend.
        conn, _ = self._acquire(request, _timeouts(request)[0], fresh=True)
        try:
            return self._exchange(request, body, conn)
        except _StaleConnection:
            raise httpx.ReadError("server closed the connection before answering", request=request) from None

    def _exchange(self, request: httpx.Request, body: bytes, conn: "_SyncConn") -> httpx.Response:
        read_timeout = _timeouts(request)[1]
        try:
            conn.sock.settimeout(read_timeout)
            try:
                conn.sock.sendall(request_head(request, len(body)) + body)
                head = conn.read_until(b"\r\n\r\n")
            except (ConnectionError, EOFError):
                if conn.buf:
                    raise
                conn.close()
                raise _StaleConnection() from None
            status, headers, length, chunked, keep_alive = parse_head(head)
            if length is not None and not chunked:
                content = conn.read_exactly(length) if length else b""
                self._release(conn, keep_alive)
                return httpx.Response(status, headers=headers, content=content,
                                      extensions={"http_version": b"HTTP/1.1"})
        except socket.timeout:
            conn.close()
            raise httpx.ReadTimeout(f"no response within {read_timeout} s", request=request) from None
        except (OSError, EOFError, ValueError) as exc:
            conn.close()
            raise httpx.ReadError(f"connection failed: {exc!r}", request=request) from None
        return httpx.Response(status, headers=headers,
                              stream=_SyncBody(self, conn, chunked, keep_alive, request),
                              extensions={"http_version": b"HTTP/1.1"})

    def fetch(self, head: bytes, body: bytes, host: str, port: int,
              timeout: float | None) -> tuple[int, bytes]:
        """As AsyncTumblerTransport.fetch: one whole exchange as bytes -> (status, body)."""
        conn, reused = self._acquire(None, timeout, host=host, port=port)
        try:
            return self._fetch_on(conn, head, body, timeout)
        except _StaleConnection:
            if not reused:
                raise httpx.ReadError("server closed the connection before answering")
        conn, _ = self._acquire(None, timeout, fresh=True, host=host, port=port)
        try:
            return self._fetch_on(conn, head, body, timeout)
        except _StaleConnection:
            raise httpx.ReadError("server closed the connection before answering") from None

    def _fetch_on(self, conn: "_SyncConn", head: bytes, body: bytes,
                  timeout: float | None) -> tuple[int, bytes]:
        try:
            conn.sock.settimeout(timeout)
            try:
                conn.sock.sendall(head + body)
                raw = conn.read_until(b"\r\n\r\n")
            except (ConnectionError, EOFError):
                if conn.buf:
                    raise
                conn.close()
                raise _StaleConnection() from None
            status, _headers, length, chunked, keep_alive = parse_head(raw)
            if chunked:
                parts = []
                while True:
                    size = int(conn.read_until(b"\r\n").split(b";")[0], 16)
                    if size == 0:
                        conn.read_until(b"\r\n")
                        break
                    parts.append(conn.read_exactly(size + 2)[:-2])
                content = b"".join(parts)
            elif length is None:   # read to the end: the server closes after the body
                parts = []
                while data := conn.read_some():
                    parts.append(data)
                content, keep_alive = b"".join(parts), False
            else:
                content = conn.read_exactly(length) if length else b""
        except socket.timeout:
            conn.close()
            raise httpx.ReadTimeout(f"no response within {timeout} s") from None
        except (OSError, EOFError, ValueError) as exc:
            conn.close()
            raise httpx.ReadError(f"connection failed: {exc!r}") from None
        self._release(conn, keep_alive)
        return status, content

    def _acquire(self, request: httpx.Request | None, timeout: float | None,
                 fresh: bool = False, host: str | None = None,
                 port: int | None = None) -> tuple[_SyncConn, bool]:
        """(a connection, whether it was reused from the pool); the origin is the request's,
        or `host` and `port` without one."""
        if request is not None:
            host, port = request.url.host, request.url.port or 80
        while not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if conn.usable():
                return conn, True
            conn.close()
        try:
            sock = socket.create_connection((host, port), timeout)
        except socket.timeout:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _SyncConn(sock), False

    def _release(self, conn: _SyncConn, keep_alive: bool) -> None:
        with self._lock:
            if keep_alive and len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class _SyncBody(httpx.SyncByteStream):
    def __init__(self, transport, conn, chunked, keep_alive, request):
        self.transport, self.conn, self.chunked = transport, conn, chunked
        self.keep_alive, self.request = keep_alive, request
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        conn = self.conn
        try:
            while True:
                if not self.chunked:
                    data = conn.read_some()
                    if not data:
                        self.keep_alive = False
                        break
                    yield data
                    continue
                size = int(conn.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    conn.read_until(b"\r\n")
                    break
                yield conn.read_exactly(size + 2)[:-2]
        except socket.timeout:
            raise httpx.ReadTimeout("no data in time", request=self.request) from None
        except (OSError, EOFError, ValueError) as exc:
            raise httpx.ReadError(f"connection failed mid-body: {exc!r}", request=self.request) from None
        self.done = True

    def close(self) -> None:
        if self.done:
            self.transport._release(self.conn, self.keep_alive)
        else:
            self.conn.close()
