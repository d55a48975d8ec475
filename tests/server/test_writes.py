"""A burst's registry writes go in a few transactions; a bad one fails only its own caller."""
from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy.exc import IntegrityError

from tumbler.runtime.spec import SandboxSpec, SandboxState
from tumbler.server.registry import Registry, SandboxRecord
from tumbler.server.writes import CoalescedWrites


class CountingRegistry(Registry):
    batches: list[int] = []

    def write_many(self, writes):
        self.batches.append(len(writes))
        super().write_many(writes)


def record(sid: str) -> SandboxRecord:
    now = time.time()
    return SandboxRecord(id=sid, spec=SandboxSpec(image="debian"), state=SandboxState.CREATED,
                         created=now, last_active=now, ttl_s=None, expires_at=None, runtime="process")


def test_burst_coalesced_and_a_bad_write_fails_alone(tmp_path):
    registry = CountingRegistry(f"sqlite:///{tmp_path}/r.db")
    registry.batches = []

    async def scenario():
        writes = CoalescedWrites(registry, asyncio.to_thread)
        await asyncio.gather(*(writes.add(record(f"s{i}")) for i in range(200)))
        await asyncio.gather(*(writes.set_state(f"s{i}", SandboxState.RUNNING) for i in range(200)))
        return await asyncio.gather(writes.add(record("new")), writes.add(record("s1")),
                                    return_exceptions=True)

    new, dup = asyncio.run(scenario())
    assert new is None and isinstance(dup, IntegrityError)
    assert len(registry.list()) == 201
    assert {r.state for r in registry.list() if r.id != "new"} == {SandboxState.RUNNING}
    assert sum(registry.batches[:-3]) == 400 and len(registry.batches) < 20   # not 400 commits
    assert registry.history("s7") == [("created", pytest.approx(registry.history("s7")[0][1])),
                                      ("running", pytest.approx(registry.history("s7")[1][1]))]
    registry.close()
