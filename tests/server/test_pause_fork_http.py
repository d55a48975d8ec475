"""Pause/resume and fork over HTTP, through the sync and the async SDK."""
from __future__ import annotations

import asyncio
import time

import pytest

from checks import IMAGE
from tumbler import AsyncSandbox, Sandbox
from tumbler.errors import Conflict, InvalidRequest
from tumbler.sdk import AsyncSandboxGroup, SandboxGroup

SPIN = "nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &"


def test_pause_freezes_and_resume_goes_on(api):
    sb = Sandbox(IMAGE, client=api)
    sb.run("export KEPT=1")
    sb.run(SPIN)
    sb.pause()
    assert sb.state == "paused" and api.get(sb.id).info.state == "paused"
    assert [s.id for s in api.list(state="paused")] == [sb.id]
    cpu = sb.stats().cpu_seconds
    time.sleep(0.5)
    assert sb.stats().cpu_seconds - cpu < 0.01
    with pytest.raises(Conflict, match="paused"):
        sb.run("true")
    with pytest.raises(Conflict, match="resume it"):
        sb.start()
    sb.resume()
    assert sb.state == "running"
    assert sb.run("echo $KEPT").output == "1\n"
    with pytest.raises(Conflict):
        sb.resume()
    sb.pause()
    sb.remove()                      # a paused sandbox removes like any other


def test_fork_group_from_one_prepared_sandbox(api):
    with Sandbox(IMAGE, client=api, labels={"run": "r1"}) as prepared:
        prepared.write_file("/root/task.txt", "the task")
        with SandboxGroup.fork(prepared, 4, labels={"member": "yes"}) as group:
            assert len(group) == 4
            assert {sb.info.labels["run"] for sb in group} == {"r1"}
            outs = [sb.run("cat /root/task.txt; echo; hostname").output for sb in group]
            assert outs == ["the task\nsandbox\n"] * 4
            group[0].write_file("/root/task.txt", "changed")
            assert group[1].read_file("/root/task.txt") == "the task"
            ids = {sb.id for sb in group}
            assert {s.id for s in api.list(labels={"member": "yes"})} == ids
        assert api.list(labels={"member": "yes"}) == []
        assert prepared.read_file("/root/task.txt") == "the task"


def test_fork_refusals_leave_nothing(api):
    sb = Sandbox(IMAGE, client=api)
    before = {s.id for s in api.list()}
    with pytest.raises(InvalidRequest, match="count"):
        sb.fork(0)
    sb.stop()
    with pytest.raises(Conflict, match="start it first"):
        sb.fork(2)
    with pytest.raises(Conflict, match="resume|paused|not paused|stopped"):
        sb.resume()
    assert {s.id for s in api.list()} == before
    sb.remove()


def test_fork_beyond_the_node_budget_makes_none(server, api):
    sb = Sandbox(IMAGE, client=api, memory="4g")
    before = {s.id for s in api.list()}
    with pytest.raises(Exception, match="node is full"):
        sb.fork(256)
    assert {s.id for s in api.list()} == before
    sb.remove()


def test_async_pause_and_fork(new_aclient):
    async def main():
        async with new_aclient() as client:
            async with AsyncSandbox(IMAGE, client=client) as sb:
                await sb.write_file("/root/x", "1")
                await sb.pause()
                assert sb.state == "paused"
                async with await AsyncSandboxGroup.fork(sb, 2) as group:
                    assert [await k.read_file("/root/x") for k in group] == ["1", "1"]
                await sb.resume()
                assert (await sb.run("echo ok")).output == "ok\n"
    asyncio.run(main())
