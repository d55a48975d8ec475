"""The web console that `tumbler serve` serves at /ui: one page of plain JS and CSS, bundled here.

The page is built only on the public REST API (/v1/..., with the same bearer token as any
client) and fetches nothing from anywhere else; `routes.py` serves its files. May import
starlette/fastapi only: the console knows the server through HTTP, like the SDK does.
"""
from tumbler.console.routes import router

__all__ = ["router"]
