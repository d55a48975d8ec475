"""A burst of cold creates is served in arrival order: each answers once its own sandbox is made,
not after the whole burst (bench/bench_burst.py measures the times)."""
from __future__ import annotations

import asyncio

from checks import IMAGE, leftovers
from tumbler import wire
from tumbler.server.config import ServerConfig
from tumbler.server.registry import Registry
from tumbler.server.service import SandboxService

BURST = 6


def test_burst_answers_in_arrival_order(runtime, tmp_path):
    """With one cold start at a time, the first create answers while the later ones have not
    begun: at most the one behind it is in the runtime (before, every create's record and runc
    call queued first, so all the burst existed before any answered)."""
    config = ServerConfig(state_dir=tmp_path, cold_starts=1)
    service = SandboxService(config, runtime, Registry(config.database_url))
    before = {i.id for i in runtime.list()}

    async def scenario():
        await service.open()
        seen_at_first: list[int] = []
        order: list[int] = []

        async def one(n: int):
            record = await service.create(wire.CreateSandboxRequest(image=IMAGE, limits={"memory": "64m"}))
            if not order:
                seen_at_first.append(len({i.id for i in runtime.list()} - before))
            order.append(n)
            return record
        try:
            records = await asyncio.gather(*(one(n) for n in range(BURST)))
            # Each answers a command once made (the handover is a running sandbox).
            outs = await asyncio.gather(*(service.run(r.id, None, "echo up") for r in records))
            return seen_at_first[0], order, [o.output for o in outs], [r.id for r in records]
        finally:
            await service.close(keep_sandboxes=False)

    seen, order, outputs, ids = asyncio.run(scenario())
    assert order == list(range(BURST))           # served in the order they came
    assert seen <= 2, f"{seen} sandboxes of the burst existed when the first answered"
    assert outputs == ["up\n"] * BURST
    for sid in ids:
        assert leftovers(runtime, sid) == []
