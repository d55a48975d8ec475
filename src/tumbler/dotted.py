"""`module:name` strings from configs and command lines, resolved to the object they name."""
from __future__ import annotations

import importlib

from tumbler.errors import InvalidRequest


def load(spec: str, what: str):
    """The object `spec` ("package.module:name") names; InvalidRequest naming `what` (the
    setting it came from) when it is malformed or does not import."""
    module, colon, name = spec.partition(":")
    if not colon or not module or not name:
        raise InvalidRequest(f"{what} {spec!r}: expected 'package.module:name'")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequest(f"{what} {spec!r}: {exc}") from None
