"""Checking a request's arguments: each getter returns the value or raises kind "invalid"."""
from __future__ import annotations

from .protocol import INVALID, AgentRequestError

_MISSING = object()


def _fail(message: str):
    raise AgentRequestError(INVALID, message)


def get(args: dict, key: str, types: type | tuple, default=_MISSING):
    """args[key] if it has one of `types`; `default` if absent (or None when default is None)."""
    value = args.get(key, _MISSING)
    if value is _MISSING or (value is None and default is None):
        if default is _MISSING:
            _fail(f"missing argument {key!r}")
        return default
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        _fail(f"argument {key!r} must be {_names(types)}, not a boolean")
    if not isinstance(value, types):
        _fail(f"argument {key!r} must be {_names(types)}, not {type(value).__name__}")
    return value


def seconds(args: dict, key: str, default: float, maximum: float) -> float:
    """A positive number of seconds no larger than `maximum`; null is refused (every wait ends)."""
    if args.get(key, _MISSING) is None:
        _fail(f"argument {key!r} must be a number of seconds, not null: every wait has a timeout")
    value = get(args, key, (int, float), default)
    if not 0 < value <= maximum:
        _fail(f"argument {key!r} must be > 0 and <= {maximum} seconds, got {value}")
    return float(value)


def size(args: dict, key: str, default: int, maximum: int) -> int:
    """A byte count in [0, maximum]."""
    value = get(args, key, int, default)
    if not 0 <= value <= maximum:
        _fail(f"argument {key!r} must be between 0 and {maximum} bytes, got {value}")
    return value


def env(args: dict, key: str = "env") -> dict[str, str]:
    """A mapping of environment variable names to string values."""
    value = get(args, key, dict, {}) or {}
    for name, val in value.items():
        if not name or "=" in name or "\0" in name or not isinstance(val, str) or "\0" in val:
            _fail(f"bad environment entry {name!r}: names must be non-empty without '=' or NUL, "
                  "values strings without NUL")
    return value


def absolute_path(args: dict, key: str = "path") -> str:
    """An absolute path without NUL bytes."""
    path = get(args, key, str)
    if not path.startswith("/") or "\0" in path:
        _fail(f"argument {key!r} must be an absolute path, got {path!r}")
    return path


def _names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join(t.__name__ for t in types)
