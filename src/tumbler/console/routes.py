"""/ui: the console's files. Open without a token (they hold no data; the page asks for one)."""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from tumbler.errors import NotFound

router = APIRouter(prefix="/ui", tags=["console"], include_in_schema=False)

TYPES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
         "console.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml",
         # xterm.js, vendored from npm (xterm-LICENSE.txt): the terminal emulator of the page
         "xterm.js": "text/javascript; charset=utf-8", "xterm-addon-fit.js": "text/javascript; charset=utf-8",
         "xterm.css": "text/css; charset=utf-8", "xterm-LICENSE.txt": "text/plain; charset=utf-8"}
# Only what the page needs, from this server only: a sandbox's output shown in the page can
# neither run script nor make the browser fetch from elsewhere. Inline styles are allowed
# (xterm.js sizes and colours its cells with them); inline script is not.
HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                      "img-src 'self' data: blob:; object-src 'none'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}
_FILES = {name: (resources.files(__package__) / "static" / name).read_bytes() for name in TYPES}


@router.get("")
async def console_root():
    return RedirectResponse("/ui/", status_code=307)


@router.get("/")
async def console_page():
    return _asset("index.html")


@router.get("/{name}")
async def console_file(name: str):
    return _asset(name)


def _asset(name: str) -> Response:
    if name not in _FILES:
        raise NotFound(f"the console has no file {name!r}; open /ui/")
    return Response(_FILES[name], media_type=TYPES[name], headers=HEADERS)
