"""In the background: stops sandboxes whose agent died, and removes sandboxes idle past their
TTL or older than their max lifetime."""
from __future__ import annotations

import asyncio
import logging
import time

from tumbler import memstats
from tumbler.errors import TumblerError
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)


def expired(record, now: float) -> str | None:
    """Why the sandbox `record` is due for removal at `now` (unix seconds), or None."""
    if record.expires_at is not None and now >= record.expires_at:
        return "max lifetime reached"
    if record.ttl_s is not None and now - record.last_active >= record.ttl_s:
        return f"idle for {now - record.last_active:.0f} s (ttl {record.ttl_s:g} s)"
    return None


class Reaper:
    """A task that, every `interval_s` seconds, flushes activity times, stops sandboxes whose
    agent died (one no client was talking to: the agent's hang-up catches the others at once)
    and removes expired sandboxes; then hands the C heap's free pages back to the kernel."""

    def __init__(self, service: SandboxService, interval_s: float):
        self.service = service
        self.interval_s = interval_s
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reaper")

    async def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except asyncio.TimeoutError:
                self._task.cancel()

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self.sweep()
            except Exception:  # the reaper must outlive any one bad pass
                log.exception("reaper pass failed")
            # Freed heap pages below the top stay resident until asked for (memstats.trim).
            memstats.trim()

    async def sweep(self) -> list[str]:
        """One pass; returns the ids removed."""
        await self.service.flush_activity()
        for sandbox_id in await self.service.sweep_dead():
            log.info("sandbox %s stopped: its agent had died", sandbox_id)
        now = time.time()
        removed = []
        for record in self.service.list():
            why = expired(record, now)
            if why is None or self.service.busy(record.id):
                continue
            log.info("removing sandbox %s: %s", record.id, why)
            try:
                await self.service.remove(record.id)
                removed.append(record.id)
            except TumblerError as exc:
                log.warning("reaper could not remove %s: %s", record.id, exc.message)
        return removed
