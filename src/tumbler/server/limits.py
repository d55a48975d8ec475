"""Request size limits as plain ASGI middleware: 413 before a too-large body is read into memory."""
from __future__ import annotations

from tumbler.server.errors import error_response
from tumbler.wire import RUN_STREAM_PATH

# Routes whose body is raw file or tar data get the upload limit; every other body is JSON.
# ROCK's multipart upload; E2B's envd upload (/files); the port proxy's bodies, whatever they are.
RAW_SUFFIXES = ("/files/content", "/files/tar", "/apis/envs/sandbox/v1/upload", "/files")
RAW_PARTS = ("/http/", "/proxy/port/")


def is_raw(path: str) -> bool:
    return path.endswith(RAW_SUFFIXES) or any(part in path for part in RAW_PARTS)


class BodyLimit:
    """Refuse bodies over `max_json` bytes (or `max_upload` on raw-data routes) with 413."""

    def __init__(self, app, max_json: int, max_upload: int):
        self.app = app
        self.max_json = max_json
        self.max_upload = max_upload

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE")
                or scope["path"] == RUN_STREAM_PATH):   # limited per line (server.runstream)
            return await self.app(scope, receive, send)
        limit = self.max_upload if is_raw(scope["path"]) else self.max_json
        length, lengths, framed_otherwise = None, 0, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if length is None:
                    if value.isdigit() and int(value) > limit:
                        return await self._refuse(scope, receive, send, limit)
                    length = value
                lengths += 1
            elif name == b"transfer-encoding":
                framed_otherwise = True
        if lengths == 1 and not framed_otherwise and length.isdigit():
            # The server reads exactly content-length bytes of body (the rest would be the
            # next request), and that is within the limit: nothing to count.
            return await self.app(scope, receive, send)
        seen = 0
        refused = False

        async def counting_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not refused:
                    # A chunked body (no, or a false, content-length): answer now and tell the
                    # app the client left, so it stops reading.
                    refused = True
                    await self._refuse(scope, receive, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:  # after a refusal the app fails on the "disconnect": expected
                raise

    @staticmethod
    async def _refuse(scope, receive, send, limit: int):
        response = error_response(413, "too_large",
                                  f"request body is over the limit of {limit} bytes for this route; "
                                  "send less (split the file, or raise the server's limit)")
        await response(scope, receive, send)
