"""NodeHost on its own (no Ray): batches answer per item and in order, outputs and exit codes
are exact, a sandbox's default session carries state, and a new host with the same id removes
what a killed predecessor left, processes included."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from checks import IMAGE, leftovers, reap, socket_holders
from tumbler.cluster import HOST_LABEL, NodeHost, host_id_for
from tumbler.errors import AgentDied, NotFound
from tumbler.runtime.spec import Limits, SandboxSpec

SPEC = SandboxSpec(image=IMAGE, limits=Limits(memory="128m"))


def test_a_dead_init_is_stopped_until_reset(runtime):
    """The life cycle's table holds on the node host as on the server: a sandbox whose init
    died answers AgentDied (again, not a hang), and a reset brings it back running."""
    async def scenario():
        host = NodeHost(host_id_for("test", f"died-{os.getpid()}"))
        [sid] = await host.create([SPEC])
        try:
            os.kill(runtime.init_pid(sid), 9)
            first, = await host.run([(sid, "echo hi")], timeout=5)
            # CI once saw a CommandTimeout here (a connection taken, no one answering): say who
            # held the agent's socket and what lived in the sandbox then.
            assert isinstance(first, AgentDied), (first, socket_holders(runtime.agent_socket(sid)),
                                                  leftovers(runtime, sid))
            second, = await host.run([(sid, "echo hi")], timeout=5)
            assert isinstance(second, AgentDied) and "reset" in second.message
            assert await host.reset([sid]) == [None]
            assert (await host.run([(sid, "echo back")], timeout=5))[0].output == "back\n"
        finally:
            assert await host.remove([sid]) == [None]
        assert await host.close() == 0
        assert leftovers(runtime, sid) == []
    asyncio.run(scenario())


def test_batches_answer_each_item_in_order(runtime):
    async def scenario():
        host = NodeHost(host_id_for("test", f"batches-{os.getpid()}"))
        ids = await host.create([SPEC] * 3)
        try:
            assert all(isinstance(i, str) for i in ids), ids
            assert {runtime.get(i).spec.labels[HOST_LABEL] for i in ids} == {host.host_id}
            runs = await host.run([(ids[0], "cd /tmp; X=7"), (ids[1], "printf 'a\\tb\\r\\n'; (exit 3)"),
                                   ("nosuch", "true"), (ids[2], "sleep 5")], timeout=0.5)
            assert runs[0].exit_code == 0
            assert (runs[1].output_bytes, runs[1].exit_code) == (b"a\tb\r\n", 3)
            assert isinstance(runs[2], NotFound) and "nosuch" in runs[2].message
            assert runs[3].timed_out and runs[3].exit_code is None
            again = await host.run([(ids[0], "echo $X $PWD")], timeout=5)
            assert again[0].output == "7 /tmp\n"               # the session carried its state
            execs = await host.exec([(ids[1], ["sh", "-c", "echo out; echo err >&2; exit 4"]),
                                     (ids[2], "pwd")], timeout=5)
            assert (execs[0].stdout, execs[0].stderr, execs[0].exit_code) == ("out\n", "err\n", 4)
            assert execs[1].stdout == "/root\n"
            assert await host.reset([ids[0]]) == [None]
            assert (await host.run([(ids[0], "echo ${X:-unset} $PWD")], timeout=5))[0].output == "unset /root\n"
            assert (await host.info()).sandboxes == 3
        finally:
            assert await host.remove(ids) == [None, None, None]
        [unknown] = await host.remove(["nosuch"])
        assert isinstance(unknown, NotFound)
        assert await host.close() == 0
        for sid in ids:
            assert leftovers(runtime, sid) == []
    asyncio.run(scenario())


def test_new_host_reclaims_what_a_killed_one_left(runtime):
    """A host process SIGKILLed with its sandboxes running: the next host with its id removes
    them all (processes, mounts, cgroups, dirs) and leaves other hosts' sandboxes alone."""
    host_id = host_id_for("test", f"reclaim-{os.getpid()}")
    maker, ids = _maker(host_id, 2, "hold")
    maker.kill()
    maker.wait(10)
    inits = [runtime.init_pid(sid) for sid in ids]
    assert all(os.path.exists(f"/proc/{pid}") for pid in inits), (ids, inits)

    async def scenario():   # one event loop for a host's whole life, as in its actor
        bystander = NodeHost(host_id_for("test", f"other-{os.getpid()}"))
        kept = await bystander.create([SPEC])
        try:
            successor = NodeHost(host_id)
            assert (successor.reclaimed, successor.reclaim_failed) == (2, [])
            await successor.close()
            for pid in inits:     # reparented to this process (a subreaper) when the maker died
                reap(pid)
            for sid in ids:
                assert leftovers(runtime, sid) == []
            # another host's sandboxes are not its business
            assert (await bystander.run([(kept[0], "echo here")], timeout=5))[0].output == "here\n"
        finally:
            assert await bystander.close() == 1
        assert leftovers(runtime, kept[0]) == []
    asyncio.run(scenario())


def test_new_host_reclaims_removes_cut_short(runtime):
    """A host killed while it removes its sandboxes (some gone, some half gone: the directory
    left without its record) -> its successor removes the rest, directories included."""
    for n, delay_s in enumerate((0.01, 0.04)):
        host_id = host_id_for("test", f"cut-{os.getpid()}-{n}")
        maker, ids = _maker(host_id, 6, "remove")
        maker.stdin.write("go\n")
        maker.stdin.flush()
        time.sleep(delay_s)
        maker.kill()
        maker.wait(10)
        successor = NodeHost(host_id)
        assert successor.reclaim_failed == []
        asyncio.run(successor.close())
        for sid in ids:
            reap(runtime.init_pid(sid) or 0, 0.1)
            assert leftovers(runtime, sid) == [], (delay_s, sid)


def _maker(host_id: str, count: int, then: str) -> tuple[subprocess.Popen, list[str]]:
    """A host in a process of its own, holding `count` sandboxes, each running a process."""
    maker = subprocess.Popen([sys.executable, "-c", MAKER, host_id, IMAGE, str(count), then],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ids = json.loads(maker.stdout.readline())
    except ValueError:
        maker.kill()
        maker.wait(10)
        raise
    assert len(ids) == count, ids
    return maker, ids


# A host that makes N sandboxes with a process running in each, says their ids, then waits to
# be killed ("hold") or, at a line on stdin, removes them ("remove").
MAKER = """
import asyncio, json, sys
from tumbler.cluster import NodeHost
from tumbler.runtime.spec import Limits, SandboxSpec

async def main(host_id, image, count, then):
    host = NodeHost(host_id)
    ids = await host.create([SandboxSpec(image=image, limits=Limits(memory="128m"))] * int(count))
    await host.run([(sid, "sleep 600 &") for sid in ids], timeout=5)
    print(json.dumps(ids), flush=True)
    if then == "remove":
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await host.remove(ids)
    await asyncio.sleep(600)

asyncio.run(main(*sys.argv[1:]))
"""
