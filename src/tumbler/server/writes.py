"""Registry writes of a burst, coalesced: every create awaits its own write, and the writes that
arrive while one transaction is being committed go together in the next (arrival order kept).

A thousand creates at once then cost a handful of commits instead of a thousand, each waiting
its turn for SQLite's write lock in a worker thread. A batch that fails (one bad write) is
written again one write at a time, so only the bad one's caller gets the error.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from tumbler.runtime.spec import SandboxState
from tumbler.server.registry import Registry, SandboxRecord

MAX_BATCH = 500      # writes in one transaction at most


class CoalescedWrites:
    def __init__(self, registry: Registry, blocking: Callable[..., Awaitable]):
        self.registry = registry
        self._blocking = blocking
        self._pending: list[tuple[tuple[str, tuple], asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def add(self, record: SandboxRecord) -> None:
        await self._submit(("add", (record,)))

    async def set_state(self, sandbox_id: str, state: SandboxState, error: str | None = None) -> None:
        await self._submit(("set_state", (sandbox_id, state, error)))

    async def _submit(self, write: tuple[str, tuple]) -> None:
        done = asyncio.get_running_loop().create_future()
        self._pending.append((write, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_all())
        # The write goes on even if this caller is cancelled: the create that asked for it
        # cleans up after itself, and a batch never loses another caller's write.
        await asyncio.shield(done)

    async def _write_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                await self._blocking(self.registry.write_many, [w for w, _ in batch])
                results = [None] * len(batch)
            except Exception:
                results = [await self._one(w) for w, _ in batch]
            for (_, done), result in zip(batch, results):
                if done.done():
                    continue
                if result is None:
                    done.set_result(None)
                else:
                    done.set_exception(result)

    async def _one(self, write: tuple[str, tuple]) -> Exception | None:
        try:
            await self._blocking(self.registry.write_many, [write])
        except Exception as exc:
            return exc
        return None
