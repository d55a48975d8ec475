"""Bearer-token auth as plain ASGI middleware: a request without a valid token reaches nothing."""
from __future__ import annotations

import hmac

from tumbler.server import e2b_auth
from tumbler.server.errors import error_response

OPEN_PATHS = frozenset({"/healthz"})  # liveness probes need no token and learn nothing


def is_open(path: str) -> bool:
    """/healthz, and the console's own files (/ui, /ui/NAME): static page code that holds no
    data; the page asks for the token and sends it with every API call it makes."""
    return path in OPEN_PATHS or path == "/ui" or path.startswith("/ui/")


class BearerAuth:
    """Let through requests whose `Authorization: Bearer <token>` matches one of `tokens`."""

    def __init__(self, app, tokens: list[str]):
        self.app = app
        self.tokens = [t.encode() for t in tokens]

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope["headers"]:
            # ROCK's SDK sends its token as XRL-Authorization (or Authorization via extra_headers)
            if name in (b"authorization", b"xrl-authorization"):
                given = value
                if name == b"authorization":
                    break
        scheme, _, token = given.partition(b" ")
        # compare_digest against every token: the time taken says nothing about which is close
        ok = scheme.lower() == b"bearer" and any([hmac.compare_digest(token, t) for t in self.tokens])
        ok = ok or e2b_auth.allows(scope, self.tokens)   # E2B's API key or a sandbox's envd token
        if not ok:
            why = "missing bearer token" if not given else "wrong bearer token"
            response = error_response(401, "unauthorized",
                                      f"{why}: send 'Authorization: Bearer <token>' with a token "
                                      "the server was given (TUMBLER_TOKEN)",
                                      headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)
