"""Loggers that import `logging` on first use: it costs ~10 ms of the agent's start otherwise.

The agent logs to stderr; `configure(level)` (from main) sets the level before anything logs.
"""
from __future__ import annotations

_level = "INFO"
_configured = False


def configure(level: str) -> None:
    """Set the level the first log call configures logging with (a name: "DEBUG", "INFO", ...)."""
    global _level
    _level = level


class LazyLogger:
    """Stands in for logging.getLogger(name); every method is the real logger's."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        global _configured
        import logging
        import sys

        if not _configured:
            logging.basicConfig(level=_level, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            _configured = True
        return getattr(logging.getLogger(self._name), attr)


def get(name: str) -> LazyLogger:
    return LazyLogger(name)
