"""Reaching a port inside a sandbox (which has no network of its own but loopback): the agent
connects to 127.0.0.1:PORT inside and relays the bytes (agent/relays.py).

- `WS /v1/sandboxes/{id}/ports/{port}/tcp`: a TCP connection over a WebSocket (binary frames
  both ways; the socket closes with it). `tumbler sandbox forward ID PORT` serves it on a local
  port (tumbler.sdk.forward).
- `ANY /v1/sandboxes/{id}/ports/{port}/http/{path}`: an HTTP proxy (HTTP/1.1, one connection
  per request, the response streamed back), and ROCK's form,
  `ANY /apis/envs/sandbox/v1/sandboxes/{id}/proxy/port/{port}/{path}`.
All behind the server's auth; the caller's credentials (Authorization, X-API-Key, ...) are not
passed on to the sandbox, and what comes back is relayed as bytes, never parsed beyond HTTP's
framing (h11).
"""
from __future__ import annotations

import asyncio
import logging

import h11
from fastapi import APIRouter, Request, WebSocket
from starlette.responses import Response, StreamingResponse

from tumbler.errors import CommandTimeout, InvalidRequest, SandboxError, TumblerError
from tumbler.server.routes import service
from tumbler.server.routes.pty import frames
from tumbler.server.routes.rock_wire import PREFIX as ROCK_PREFIX
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
router = APIRouter(tags=["sandboxes"])

POLL_WAIT_S = 15.0
POLL_TIMEOUT_S = 40.0
RESPONSE_TIMEOUT_S = 300.0   # seconds a proxied request may wait for its response head
MAX_FRAME = 1 << 20          # bytes of one WebSocket frame passed in at once
# Not passed on: hop-by-hop headers, and the caller's credentials for this server.
DROP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
                  "te", "trailer", "host", "content-length", "authorization",
                  "xrl-authorization", "x-api-key", "x-access-token", "cookie"})
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class Relay:
    """One TCP connection to a port inside a sandbox, through its agent."""

    def __init__(self, svc: SandboxService, sandbox_id: str, conn_id: str):
        self.svc, self.sandbox_id, self.conn_id = svc, sandbox_id, conn_id
        self._after = 0

    @classmethod
    async def open(cls, svc: SandboxService, sandbox_id: str, port: int) -> "Relay":
        if not 1 <= port <= 65535:
            raise InvalidRequest(f"port must be between 1 and 65535, not {port}")
        result, _ = await svc.call(sandbox_id, "tcp.open", {"port": port})
        return cls(svc, sandbox_id, str(result["id"]))

    async def write(self, data: bytes) -> None:
        await self.svc.call(self.sandbox_id, "tcp.write", {"id": self.conn_id}, data)

    async def read(self) -> tuple[bytes, bool]:
        """What the port sent next (waits up to POLL_WAIT_S), and whether it has closed."""
        result, body = await self.svc.call(self.sandbox_id, "tcp.read",
                                           {"id": self.conn_id, "after": self._after,
                                            "wait": POLL_WAIT_S}, timeout=POLL_TIMEOUT_S)
        self._after = int(result["next"])
        return body, result.get("end") is not None

    async def close(self) -> None:
        try:
            await self.svc.call(self.sandbox_id, "tcp.close", {"id": self.conn_id})
        except TumblerError as exc:   # the sandbox went: the connection went with it
            log.info("relay %s/%s not closed: %s", self.sandbox_id, self.conn_id, exc.message)


# -- TCP over a WebSocket --------------------------------------------------------------------

@router.websocket("/v1/sandboxes/{sandbox_id}/ports/{port}/tcp")
async def tcp(websocket: WebSocket, sandbox_id: str, port: int):
    await websocket.accept()
    try:
        relay = await Relay.open(service(websocket), sandbox_id, port)
    except TumblerError as exc:
        await websocket.close(code=1011, reason=exc.message[:120])
        return
    inbound = asyncio.ensure_future(_to_port(websocket, relay))
    outbound = asyncio.ensure_future(_from_port(websocket, relay))
    try:
        await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (inbound, outbound):
            task.cancel()
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        await relay.close()
        try:
            await websocket.close()
        except RuntimeError:
            pass


async def _to_port(websocket: WebSocket, relay: Relay) -> None:
    async for message in frames(websocket):
        data = message.get("bytes") or (message.get("text") or "").encode()
        if data:
            await relay.write(data[:MAX_FRAME])


async def _from_port(websocket: WebSocket, relay: Relay) -> None:
    while True:
        data, closed = await relay.read()
        if data:
            await websocket.send_bytes(data)
        if closed:
            return


# -- HTTP ------------------------------------------------------------------------------------

@router.api_route("/v1/sandboxes/{sandbox_id}/ports/{port}/http/{path:path}", methods=METHODS)
async def http_proxy(sandbox_id: str, port: int, path: str, request: Request):
    return await proxy(request, sandbox_id, port, path)


@router.api_route(ROCK_PREFIX + "/sandboxes/{sandbox_id}/proxy/port/{port}/{path:path}",
                  methods=METHODS)
async def rock_http_proxy(sandbox_id: str, port: int, path: str, request: Request):
    """ROCK's proxy route, with the port in the path (ROCK's other port forms are not served)."""
    from tumbler.server.routes.rock import _resolve
    return await proxy(request, _resolve(service(request), sandbox_id).id, port, path)


async def proxy(request: Request, sandbox_id: str, port: int, path: str) -> Response:
    svc = service(request)
    body = await request.body()
    target = "/" + path + (f"?{request.url.query}" if request.url.query else "")
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in DROP]
    headers += [("host", f"127.0.0.1:{port}"), ("connection", "close"),
                ("content-length", str(len(body)))]
    relay = await Relay.open(svc, sandbox_id, port)
    try:
        conn = h11.Connection(h11.CLIENT)
        await relay.write(conn.send(h11.Request(method=request.method, target=target,
                                                headers=headers))
                          + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        head = await asyncio.wait_for(_next_event(conn, relay), RESPONSE_TIMEOUT_S)
    except asyncio.TimeoutError:
        await relay.close()
        raise CommandTimeout(f"port {port} in sandbox {sandbox_id} sent no response within "
                             f"{RESPONSE_TIMEOUT_S:g} s") from None
    except BaseException:
        await relay.close()
        raise
    if not isinstance(head, h11.Response):
        await relay.close()
        raise SandboxError(f"port {port} in sandbox {sandbox_id} did not answer HTTP")
    out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers
                   if k.decode("latin-1").lower() not in DROP - {"cookie"}]
    response = StreamingResponse(_body(conn, relay), status_code=head.status_code)
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in out_headers]
    return response


async def _next_event(conn: h11.Connection, relay: Relay):
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise SandboxError(f"the sandbox's server broke HTTP: {exc}") from None
        if event is not h11.NEED_DATA:
            return event
        data, closed = await relay.read()
        conn.receive_data(data)
        if closed:
            conn.receive_data(b"")


async def _body(conn: h11.Connection, relay: Relay):
    try:
        while True:
            event = await _next_event(conn, relay)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return
    finally:
        await relay.close()
