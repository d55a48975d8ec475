"""Pool demand scales a Ray cluster: a sandbox that finds no room on the live nodes makes the
server's ClusterRuntime ask Ray's autoscaler for one node more (ClusterConfig.autoscale_max_nodes),
which is what Ray's `request_resources` stores for the autoscaler to act on; an idle node's host
is released (ClusterConfig.idle_release_s) so that the autoscaler can remove the node, and taken
back when the other nodes are full. The local cluster here has no autoscaler process, so the
tests read the request where Ray keeps it; the last runs Ray's own autoscaler (over its fake
multi-node provider) and sees it add a node and remove it."""
from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL  # noqa: E402
from ray.autoscaler.v2.utils import is_autoscaler_v2  # noqa: E402
from ray.experimental.internal_kv import _internal_kv_get  # noqa: E402

import ray  # noqa: E402
from checks import IMAGE, leftovers  # noqa: E402
from raycluster import LABEL, RESOURCE, autoscaling_cluster, local_cluster, reap_zombies  # noqa: E402
from tumbler.cluster import ClusterConfig  # noqa: E402
from tumbler.cluster.client import actor_name  # noqa: E402
from tumbler.cluster.placement import Budget  # noqa: E402
from tumbler.cluster.runtime import ClusterRuntime  # noqa: E402
from tumbler.config import Paths  # noqa: E402
from tumbler.errors import CapacityExceeded  # noqa: E402
from tumbler.runtime.process import ProcessRuntime  # noqa: E402
from tumbler.runtime.spec import Limits, SandboxSpec  # noqa: E402

A = f"s{os.getpid()}"


def _asked() -> list[dict] | None:
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else None


def test_no_room_asks_the_autoscaler_for_a_node():
    with local_cluster([A]):
        config = ClusterConfig(autoscale_max_nodes=2, namespace=f"autoscale-{os.getpid()}")
        rt = ClusterRuntime(Budget(256 << 20, 1 << 16, 64.0), config=config)
        try:
            big = SandboxSpec(image=IMAGE, limits=Limits(memory=512 << 20))
            with pytest.raises(CapacityExceeded, match=r"short of memory.*Asked Ray's autoscaler "
                                                       r"for 2 nodes with tumbler_host"):
                rt.create(big)
            assert not is_autoscaler_v2()   # v2 would take it over a GCS call instead
            assert _asked() == [{"tumbler_host": 1}] * 2
            # a label no node has is not a matter of room: nothing is asked for it
            rt._asked = 0
            odd = SandboxSpec(image=IMAGE, labels={"tumbler.node/zone": "mars"})
            with pytest.raises(CapacityExceeded) as err:
                rt.create(odd)
            assert "autoscaler" not in err.value.message
            # at the cap, it says what it is short of and asks for nothing more
            rt.config = config.model_copy(update={"autoscale_max_nodes": 1})
            with pytest.raises(CapacityExceeded) as err:
                rt.create(big)
            assert "autoscaler" not in err.value.message
        finally:
            rt.close()
            reap_zombies()


IDLE_S = 0.5


def test_an_idle_node_is_released_and_taken_back_when_the_others_are_full():
    """A node with no sandbox and no per-node pool's target for idle_release_s has its host
    ended (its ledger gone) and is marked released, the standing request lowered to the live
    hosts: Ray's autoscaler may then remove it. No host starts there again while the other
    node has room; once that one is full, the released node is taken back and serves."""
    b_name = f"t{os.getpid()}"
    with local_cluster([A, b_name]):
        config = ClusterConfig(autoscale_max_nodes=3, idle_release_s=IDLE_S,
                               namespace=f"release-{os.getpid()}")
        rt = ClusterRuntime(Budget(256 << 20, 1 << 16, 64.0), config=config)  # 2 of 128 MiB a node
        made: list[str] = []
        try:
            host = {n["labels"]["tumbler-host"]: n["host_id"] for n in rt.nodes()}
            a, b = host[A], host[b_name]
            small = SandboxSpec(image=IMAGE, limits=Limits(memory=128 << 20))
            on_a = small.model_copy(update={"labels": {"tumbler.node/tumbler-host": A}})
            made.append(rt.create(on_a).id)

            assert rt.release_idle() == []             # idle from now on: b; a holds a sandbox
            time.sleep(IDLE_S)
            rt.keep_nodes([small.model_copy(update={"labels": {"tumbler.node/tumbler-host": b_name}})])
            assert rt.release_idle() == []             # a per-node pool's target on b keeps it
            rt.keep_nodes([])
            assert rt.release_idle() == []             # idle again from now
            time.sleep(IDLE_S)
            assert rt.release_idle() == [b]

            assert {n["host_id"]: n["state"] for n in rt.nodes()} == {a: "alive", b: "released"}
            with pytest.raises(ValueError):            # its actor is gone...
                ray.get_actor(actor_name(b), namespace=config.namespace)
            assert not (Paths.from_env().home / "nodehosts" / b.replace("/", "_")).exists()  # ...its ledger too
            assert _asked() == [{"tumbler_host": 1}]   # the standing request: the live host only
            assert rt.node_count(small) == 1           # per-node pools count a only
            assert rt.total_budget().memory_bytes == 512 << 20   # b can still be taken back
            # a server restarted now (a new runtime in this namespace) finds b released too,
            # from Ray's KV: it starts no host there, so the autoscaler may still remove the node
            again = ClusterRuntime(Budget(256 << 20, 1 << 16, 64.0), config=config)
            assert {n["host_id"]: n["state"] for n in again.nodes()} == {a: "alive", b: "released"}
            assert again.total_budget().memory_bytes == 512 << 20
            with pytest.raises(ValueError):
                ray.get_actor(actor_name(b), namespace=config.namespace)
            # the reaper's pass starts no host there again (a stays: it holds a sandbox)
            assert rt.lost_sandboxes() == {} and rt.refresh() == []
            assert {n["host_id"]: n["state"] for n in rt.nodes()} == {a: "alive", b: "released"}

            second = rt.create(small)                  # spread would pick the empty b: a has room
            made.append(second.id)
            assert rt.host_of(second.id) == a
            third = rt.create(small)                   # a is full: b is taken back
            made.append(third.id)
            assert rt.host_of(third.id) == b
            assert {n["host_id"]: n["state"] for n in rt.nodes()} == {a: "alive", b: "alive"}
            rt.start(third.id)                         # its new host serves it
            rt.wait_agent(third.id)
            [ran] = rt.client.exec([(third.id, ["echo", "back"])], timeout=30)
            assert (ran.exit_code, ran.stdout_bytes) == (0, b"back\n"), ran
        finally:
            for sid in made:
                rt.remove(sid)
            rt.close()
            reap_zombies()
    for sid in made:
        assert leftovers(ProcessRuntime(), sid) == []


AUTOSCALER_WAIT_S = 120.0


def _until(what: str, check, timeout: float = AUTOSCALER_WAIT_S):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.5)
    return found


def _sandbox_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(RESOURCE)]


def test_rays_autoscaler_adds_a_node_for_a_sandbox_and_removes_it_once_released():
    """Ray's own autoscaler, on a cluster scaled to zero: a sandbox that finds no node makes
    the runtime ask for one; the autoscaler launches it, the reaper's pass starts a host there,
    and the sandbox is made and runs. Once it is gone and the node idles, the host is released
    and the request lowered, and the autoscaler removes the node: Ray no longer lists it, and
    the runtime forgets it."""
    name = f"auto{os.getpid()}"
    with autoscaling_cluster(name, idle_timeout_minutes=0.1):
        config = ClusterConfig(autoscale_max_nodes=1, idle_release_s=IDLE_S,
                               namespace=f"real-autoscale-{os.getpid()}")
        rt = ClusterRuntime(Budget(256 << 20, 1 << 16, 64.0), config=config)
        made: list[str] = []
        try:
            assert rt.nodes() == [] and _sandbox_nodes() == []
            spec = SandboxSpec(image=IMAGE, limits=Limits(memory=128 << 20))
            with pytest.raises(CapacityExceeded, match="Asked Ray's autoscaler for 1 nodes"):
                rt.create(spec)
            [node] = _until("the autoscaler to launch a node", _sandbox_nodes)
            assert node["Labels"][LABEL] == name
            [host] = _until("a node host on the new node", lambda: rt.lost_sandboxes() == {}
                            and [n["host_id"] for n in rt.nodes() if n["state"] == "alive"])
            made.append(rt.create(spec).id)
            rt.start(made[0])
            rt.wait_agent(made[0])
            [ran] = rt.client.exec([(made[0], ["echo", "scaled"])], timeout=30)
            assert (ran.exit_code, ran.stdout_bytes) == (0, b"scaled\n"), ran
            rt.remove(made.pop())

            assert rt.release_idle() == []             # idle from now on
            time.sleep(IDLE_S)
            assert rt.release_idle() == [host]
            assert _asked() in (None, [])              # nothing stands for the autoscaler
            _until("the autoscaler to remove the idle node", lambda: _sandbox_nodes() == [])
            _until("the runtime to forget the removed node",
                   lambda: rt.lost_sandboxes() == {} and rt.nodes() == [])
        finally:
            for sid in made:
                rt.remove(sid)
            rt.close()
            reap_zombies()
