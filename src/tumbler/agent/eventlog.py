"""A numbered log of output events that readers follow by sequence number with long polls:
a started process's output (jobs.py), a TCP connection's bytes (relays.py).

Events are (kind, bytes). At most `keep_bytes` are kept (older events are dropped; a reader
that fell behind is told where the kept ones start, by `first`). `end` is set once the source
is done; a reader gets it with the last events.
"""
from __future__ import annotations

import threading
import time

MAX_WAIT = 60.0               # seconds one read may wait
MAX_READ_BYTES = 512 << 10    # bytes one read answers (the host reads up to 1 MiB)
MAX_READ_EVENTS = 2048        # events one read answers


class EventLog:
    def __init__(self, keep_bytes: int):
        self.keep_bytes = keep_bytes
        self.events: list[tuple[str, bytes]] = []
        self.first = 0                        # sequence number of events[0]
        self.kept = 0                         # bytes in events
        self.end: dict | None = None
        self.cond = threading.Condition()

    def add(self, kind: str, data: bytes) -> None:
        with self.cond:
            self.events.append((kind, data))
            self.kept += len(data)
            while self.kept > self.keep_bytes and len(self.events) > 1:
                self.kept -= len(self.events.pop(0)[1])
                self.first += 1
            self.cond.notify_all()

    def finish(self, end: dict) -> None:
        with self.cond:
            self.end = end
            self.cond.notify_all()

    def read(self, after: int, wait: float) -> tuple[dict, bytes]:
        """Events numbered `after` and on (kinds and sizes in the result, their bytes in the
        body), waiting up to `wait` seconds for the first; `after` -1: from now on."""
        deadline = time.monotonic() + min(max(float(wait), 0.0), MAX_WAIT)
        with self.cond:
            if after < 0:
                after = self.first + len(self.events)
            while self.first + len(self.events) <= after and self.end is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            start = max(after, self.first)
            kinds, sizes, chunks, total = [], [], [], 0
            for kind, data in self.events[start - self.first:]:
                if chunks and (total + len(data) > MAX_READ_BYTES or len(chunks) >= MAX_READ_EVENTS):
                    break
                kinds.append(kind)
                sizes.append(len(data))
                chunks.append(data)
                total += len(data)
            nxt = start + len(chunks)
            end = self.end if nxt == self.first + len(self.events) else None
        return {"first": start, "kinds": kinds, "sizes": sizes, "next": nxt, "end": end}, \
            b"".join(chunks)
