"""ROCK's life-cycle deadlines, kept in the registry so they outlive a server restart.

A ROCK start that asks for `auto_archive_seconds` or `auto_delete_seconds` gets, instead of the
idle TTL that removes it, three labels: `rock.auto_stop_s` (its `auto_clear_time`, seconds: it is
stopped once idle that long), and one of `rock.auto_archive_s` / `rock.auto_delete_s` (seconds
after it stopped, however it stopped, that it is archived or removed). When it stopped is read
from the registry's state history, so a server that was down meanwhile acts on its next pass.
Each pass also removes archive images whose sandbox is gone (rock_archive.sweep_images).
"""
from __future__ import annotations

import asyncio
import logging
import time

from tumbler.errors import InvalidRequest, TumblerError
from tumbler.runtime.spec import SandboxState
from tumbler.server import rock_archive
from tumbler.server.registry import SandboxRecord
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
AUTO_STOP, AUTO_ARCHIVE, AUTO_DELETE = "rock.auto_stop_s", "rock.auto_archive_s", "rock.auto_delete_s"


def seconds(record: SandboxRecord, label: str) -> float | None:
    try:
        return float(record.labels[label])
    except (KeyError, ValueError):
        return None


def stopped_at(history: list[tuple[str, float]]) -> float | None:
    """When the sandbox last became stopped, if it is stopped now."""
    if history and history[-1][0] == SandboxState.STOPPED:
        for state, at in reversed(history):
            if state != SandboxState.STOPPED:
                break
            first = at
        return first
    return None


def due(record: SandboxRecord, history: list[tuple[str, float]], now: float) -> str | None:
    """What the deadlines ask of `record` at `now`: "stop", "archive", "delete" or None."""
    if record.state == SandboxState.RUNNING:
        idle = seconds(record, AUTO_STOP)
        return "stop" if idle is not None and now - record.last_active >= idle else None
    since = stopped_at(history) if record.state == SandboxState.STOPPED else None
    if since is None:
        return None
    for label, action in ((AUTO_ARCHIVE, "archive"), (AUTO_DELETE, "delete")):
        wait = seconds(record, label)
        if wait is not None and now - since >= wait:
            return action
    return None


class RockDeadlines:
    """A task that applies the deadlines every `interval_s` seconds."""

    def __init__(self, service: SandboxService, interval_s: float):
        self.service = service
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rock-deadlines")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except Exception:   # the task must outlive any one bad pass
                log.exception("ROCK deadline pass failed")

    async def sweep(self) -> list[tuple[str, str]]:
        """One pass; returns (sandbox id, what was done) for each sandbox acted on."""
        svc, now, done = self.service, time.time(), []
        for record in svc.list():
            if not any(label in record.labels for label in (AUTO_STOP, AUTO_ARCHIVE, AUTO_DELETE)):
                continue
            if svc.busy(record.id):
                continue
            history = await svc.blocking(svc.registry.history, record.id)
            action = due(record, history, now)
            if action is None:
                continue
            log.info("ROCK deadline: %s sandbox %s", action, record.id)
            try:
                if action == "stop":
                    await svc.stop(record.id)
                elif action == "archive":
                    await rock_archive.archive(svc, record.id)
                else:
                    await svc.remove(record.id)
                done.append((record.id, action))
            except TumblerError as exc:
                log.warning("ROCK deadline: could not %s %s: %s", action, record.id, exc.message)
        await svc.blocking(rock_archive.sweep_images, svc)
        return done


def labels_for(idle_s: float | None, archive_s: int | None, delete_s: int | None) -> dict[str, str]:
    """The labels a ROCK start with these deadlines (seconds) gets."""
    if archive_s is not None and delete_s is not None:
        raise InvalidRequest("auto_archive_seconds and auto_delete_seconds cannot both be given")
    out = {AUTO_STOP: f"{idle_s:g}"} if idle_s else {}
    if archive_s is not None:
        out[AUTO_ARCHIVE] = str(archive_s)
    if delete_s is not None:
        out[AUTO_DELETE] = str(delete_s)
    return out
