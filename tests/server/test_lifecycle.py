"""The whole life of a sandbox over HTTP, through the sync and the async SDK."""
from __future__ import annotations

import asyncio

import pytest

from checks import IMAGE
from tumbler import AsyncSandbox, Sandbox
from tumbler.errors import Conflict, NotFound
from tumbler.sdk import AsyncSandboxGroup, SandboxGroup


def test_life_cycle_sync(api, runtime):
    sb = Sandbox(IMAGE, client=api, env={"GREETING": "hello"}, cwd="/tmp", hostname="box1",
                 memory="256m", labels={"team": "a", "job": "life"})
    assert sb.state == "running"
    assert sb.info.spec.limits.memory == 256 << 20
    assert sb.run("echo $GREETING $PWD $(hostname)").output == "hello /tmp box1\n"
    sb.run("cd /etc && export X=1")
    assert sb.run("echo $X $PWD").output == "1 /etc\n"

    assert [s.id for s in api.list(labels={"job": "life"})] == [sb.id]
    assert api.list(labels={"job": "other"}) == []
    assert sb.id in [s.id for s in api.list(state="running")]
    assert api.get(sb.id).info.labels == {"team": "a", "job": "life"}

    r = sb.exec(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=b"in")
    assert (r.stdout, r.stderr, r.exit_code) == ("in", "err\n", 3)
    stats = sb.stats()
    assert stats.memory_limit_bytes == 256 << 20 and stats.pids >= 1

    sb.write_file("/root/kept.txt", "kept")
    sb.stop()
    assert sb.state == "stopped"
    with pytest.raises(Conflict):
        sb.run("true")
    sb.start()
    assert sb.read_file("/root/kept.txt") == "kept"
    assert sb.run("echo $X").output == "\n"          # a fresh default session after a restart

    sb.reset()
    with pytest.raises(NotFound):
        sb.read_file("/root/kept.txt")

    sb.write_file("/root/snap.txt", "from the snapshot")
    image = f"snap-{sb.id}"
    assert sb.snapshot(image) == image
    try:
        with Sandbox(image, client=api) as child:
            assert child.read_file("/root/snap.txt") == "from the snapshot"
    finally:
        runtime.images.remove(image, in_use=lambda _n: False)

    sb.remove()
    with pytest.raises(NotFound):
        api.get(sb.id)


def test_sandbox_group_sync(api):
    with SandboxGroup(4, IMAGE, client=api, labels={"group": "g1"}) as group:
        assert len(group) == 4
        assert len(api.list(labels={"group": "g1"})) == 4
        assert [sb.run("echo ok").output for sb in group] == ["ok\n"] * 4
    assert api.list(labels={"group": "g1"}) == []


@pytest.mark.asyncio
async def test_life_cycle_async(new_aclient):
    client = new_aclient()
    try:
        async with AsyncSandbox(IMAGE, client=client, labels={"mode": "async"}) as sb:
            assert (await sb.run("echo hi")).output == "hi\n"
            chunks = []
            streamed = await sb.run("echo a; sleep 0.1; echo b", on_output=chunks.append)
            assert streamed.output == "a\nb\n" and b"".join(chunks) == b"a\nb\n"
            s = await sb.session("work", cwd="/tmp")
            await s.run("export Y=2")
            assert (await s.run("echo $Y $PWD")).output == "2 /tmp\n"
            await s.close()
            await sb.write_file("/tmp/a.bin", b"\x00\xff")
            assert await sb.read_bytes("/tmp/a.bin") == b"\x00\xff"
            r = await sb.exec("echo $Z", env={"Z": "3"})
            assert r.stdout == "3\n"
            assert any("python3" in p.cmd for p in await sb.processes())
            await sb.reset()
            assert (await sb.run("echo $Y")).output == "\n"
            await sb.stop()
            assert sb.state == "stopped"
            await sb.start()
            assert (await sb.run("echo back")).output == "back\n"

        async with AsyncSandboxGroup(3, IMAGE, client=client) as group:
            outs = await asyncio.gather(*(sb.run("echo $((6*7))") for sb in group))
            assert [o.output for o in outs] == ["42\n"] * 3
    finally:
        await client.close()
