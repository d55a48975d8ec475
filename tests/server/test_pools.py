"""Warm pools over the real process runtime: handover, refill, resize, no leaks."""
from __future__ import annotations

import asyncio

import pytest

from checks import IMAGE, leftovers
from tumbler.errors import InvalidRequest, NotFound, RuntimeFailure
from tumbler.local import LocalSandbox
from tumbler.runtime.spec import Limits, SandboxSpec
from tumbler.server.pools import PoolManager


async def wait_ready(pools: PoolManager, name: str, n: int, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while next(p for p in pools.list() if p.name == name).ready < n:
        assert asyncio.get_running_loop().time() < deadline, pools.list()
        await asyncio.sleep(0.02)


def test_handover_refill_and_cleanup(runtime):
    async def scenario():
        pools = PoolManager(runtime)
        spec = SandboxSpec(image=IMAGE, limits=Limits(memory="256m"))
        pools.set("small", spec, 2)
        await wait_ready(pools, "small", 2)
        taken = await pools.take(spec.model_copy(update={"labels": {"job": "x"}}))
        assert taken is not None
        assert await pools.take(SandboxSpec(image=IMAGE)) is None  # other limits: no match
        await wait_ready(pools, "small", 2)  # refilled
        waiting = [i.id for p in pools._pools.values() for i in p.ready]
        await pools.close()
        return taken, waiting

    taken, waiting = asyncio.run(scenario())
    try:
        sb = LocalSandbox.attach(taken.id, runtime)
        assert sb.run("echo handed over").output == "handed over\n"
    finally:
        runtime.remove(taken.id)
    for sid in [taken.id, *waiting]:
        assert leftovers(runtime, sid) == []


def test_resize_and_bad_input(runtime):
    async def scenario():
        pools = PoolManager(runtime)
        spec = SandboxSpec(image=IMAGE)
        pools.set("p", spec, 2)
        await wait_ready(pools, "p", 2)
        ids = [i.id for i in pools._pools["p"].ready]
        pools.resize("p", 0)
        for _ in range(200):
            if not pools._pools["p"].ready:
                break
            await asyncio.sleep(0.02)
        assert pools.list()[0].ready == 0
        with pytest.raises(NotFound):
            pools.resize("nope", 1)
        with pytest.raises(InvalidRequest):
            pools.set("p", spec, -1)
        await pools.close()
        return ids

    for sid in asyncio.run(scenario()):
        assert leftovers(runtime, sid) == []


class FirstRemoveFails:
    """The real runtime, except that the first removal of each sandbox fails (a runc that ran
    past its timeout on a loaded node, say)."""

    def __init__(self, runtime):
        self.runtime, self.failed = runtime, []

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def remove(self, sandbox_id: str) -> None:
        if sandbox_id not in self.failed:
            self.failed.append(sandbox_id)
            raise RuntimeFailure(f"injected: removing {sandbox_id} failed")
        self.runtime.remove(sandbox_id)


def test_a_failed_removal_is_retried_even_when_the_pool_closes_meanwhile(runtime):
    flaky = FirstRemoveFails(runtime)

    async def scenario():
        pools = PoolManager(flaky)
        pools.set("p", SandboxSpec(image=IMAGE), 2)
        await wait_ready(pools, "p", 2)
        ids = [i.id for i in pools._pools["p"].ready]
        pools.resize("p", 0)      # the refill task starts removing...
        await asyncio.sleep(0)
        await pools.close()       # ...and is cancelled; close waits for the removals it began
        return ids

    ids = asyncio.run(scenario())
    assert sorted(flaky.failed) == sorted(ids)
    for sid in ids:
        assert leftovers(runtime, sid) == []


def test_failing_spec_reports_its_error(runtime):
    async def scenario():
        pools = PoolManager(runtime)
        pools.set("broken", SandboxSpec(image="no-such-image"), 1)
        for _ in range(100):
            if pools.list()[0].last_error:
                break
            await asyncio.sleep(0.02)
        status = pools.list()[0]
        await pools.close()
        return status

    status = asyncio.run(scenario())
    assert "no-such-image" in status.last_error and status.ready == 0


def test_a_pool_starts_several_at_once_and_closing_mid_fill_leaves_nothing(runtime):
    """Sandboxes with a small CPU limit wait most of a second for their agent; a pool makes
    the next ones meanwhile (it used to wait for each), and a close while starts are under way
    removes what they made."""
    async def scenario():
        pools = PoolManager(runtime)
        pools.set("slow", SandboxSpec(image=IMAGE, limits=Limits(memory="64m", cpus=0.1)), 6)
        peak = 0
        deadline = asyncio.get_running_loop().time() + 30
        while pools.list()[0].ready < 2:
            peak = max(peak, pools.list()[0].starting)
            assert asyncio.get_running_loop().time() < deadline, pools.list()
            await asyncio.sleep(0.01)
        made = {i.id for i in runtime.list() if i.spec.labels.get("tumbler.pool") == "slow"}
        await pools.close()   # some of the six are still starting
        return peak, made

    peak, made = asyncio.run(scenario())
    assert peak > 1
    left = [i.id for i in runtime.list() if i.spec.labels.get("tumbler.pool") == "slow"]
    assert left == []
    for sid in made:
        assert leftovers(runtime, sid) == []
