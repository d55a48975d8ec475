"""Node hosts that outlive their driver (ClusterConfig.detached): a driver SIGKILLed holding
sandboxes, and the next driver with the same owner takes its hosts over (ClusterRuntime, as
the server's cluster mode does at a restart): the sandboxes and their shells are as they
were, the creates the dead driver had under way are in the listing (let finish first), a
driver of another owner is refused, and what no record names is removed on request; a
driver that stops keeping its hosts (keep_sandboxes) leaves them to the next as well. The
same through a real `tumbler serve --ray` SIGKILLed and restarted: test_server_cluster.py
(slow)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

from checks import IMAGE, leftovers  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from tumbler import ops  # noqa: E402
from tumbler.cluster import ClusterConfig  # noqa: E402
from tumbler.cluster.placement import Budget  # noqa: E402
from tumbler.cluster.runtime import ClusterRuntime  # noqa: E402
from tumbler.errors import Conflict  # noqa: E402
from tumbler.runtime.process import ProcessRuntime  # noqa: E402

A = f"r{os.getpid()}"     # this run's node name (a host that starts reclaims its id's sandboxes)
BUDGET = Budget(1 << 30, 1 << 16, 64.0)
IN_FLIGHT = [f"f1ed0000000{i}" for i in range(8)]
CONFIG = {"detached": True, "owner": "registry-1", "namespace": f"restart-{os.getpid()}"}

# A driver that makes two sandboxes (a variable set in the first's shell), sends a batch of
# creates that it never waits for, says the ids and then waits to be killed.
DRIVER = textwrap.dedent("""
    import json, sys, time, ray
    from tumbler import ops
    from tumbler.cluster import ClusterConfig
    from tumbler.cluster.placement import Budget
    from tumbler.cluster.runtime import ClusterRuntime
    from tumbler.runtime.spec import SandboxSpec, Limits
    ray.init(address=sys.argv[1], log_to_driver=False)
    rt = ClusterRuntime(Budget(1 << 30, 1 << 16, 64.0), config=ClusterConfig(**json.loads(sys.argv[2])))
    spec = SandboxSpec(image=sys.argv[3], limits=Limits(memory="64m"))
    ids = [rt.create(spec).id for _ in range(2)]
    for sid in ids:
        rt.start(sid)
    rt.wait_agent(ids[0])
    [host] = rt.client.hosts()
    actor = rt.client.host(host.host_id).actor
    op = ops.run("export KEEP=kept", timeout=30)
    ray.get(actor.call.remote([(ids[0], (op.name, op.args, op.body, op.timeout))]))
    actor.runtime_calls.remote([(sid, ("create", (spec, sid))) for sid in sys.argv[4:]])
    # .remote() only queues the submission: a driver killed at once may never have sent it
    # (CI saw the 8 creates missing). The actor starts its calls in the order sent, so once
    # a later call answers, the creates are under way on the host, and not waited for.
    ray.get(actor.info.remote())
    print(json.dumps(ids), flush=True)
    time.sleep(600)
""")


def _run(rt: ClusterRuntime, sandbox_id: str, command: str):
    op = ops.run(command, timeout=30)
    return op.parse(*asyncio.run(rt.agent_client(sandbox_id).call(op.name, op.args, op.body,
                                                                   timeout=op.timeout)))


def test_hosts_outlive_a_killed_driver_and_are_taken_over():
    with local_cluster([A]) as lc:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, lc.cluster.address,
                                   json.dumps(CONFIG), IMAGE, *IN_FLIGHT], stdout=subprocess.PIPE, text=True)
        try:
            ids = json.loads(driver.stdout.readline())
        finally:
            driver.kill()            # SIGKILL: no shutdown code runs
            driver.wait(30)
        assert len(ids) == 2, ids
        made = [*ids, *IN_FLIGHT]
        lc.add(A)   # a second node of the same name on this machine: its host cannot start,
                    # and the take-over of the first must not suffer for it
        try:
            rt = ClusterRuntime(BUDGET, config=ClusterConfig(**CONFIG))
            try:
                [node] = rt.nodes()
                # the creates it never waited for were let finish before the listing
                assert sorted(node["sandbox_ids"]) == sorted(made), node
                assert node["admitted"]["memory_bytes"] == len(made) * (64 << 20)
                with pytest.raises(Conflict, match="serves the server of 'registry-1'"):
                    ClusterRuntime(BUDGET, config=ClusterConfig(**{**CONFIG, "owner": "registry-2"}))
                assert rt.get(ids[0]).state.value == "running"
                assert _run(rt, ids[0], "echo $KEEP").output == "kept\n"   # its shell as it was
                assert _run(rt, ids[1], "echo hi").output == "hi\n"
                assert sorted(rt.remove_unknown({ids[0]})) == sorted(made[1:])
                assert [i.id for i in rt.list()] == [ids[0]]
                rt.close(keep_hosts=True)    # a graceful stop with keep_sandboxes: hosts serve on
                rt = ClusterRuntime(BUDGET, config=ClusterConfig(**CONFIG))
                assert [i.id for i in rt.list()] == [ids[0]]
                assert _run(rt, ids[0], "echo $KEEP").output == "kept\n"
            finally:
                rt.close()           # removes what is left, stops the hosts
        finally:
            reap_zombies()
    runtime = ProcessRuntime()
    for sid in made:
        assert leftovers(runtime, sid) == []
