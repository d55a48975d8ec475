"""Placement of sandboxes over node hosts: budgets, node labels, spread and pack, lost nodes."""
from __future__ import annotations

import pytest

from tumbler.cluster.placement import Budget, Placement
from tumbler.errors import CapacityExceeded, InvalidRequest
from tumbler.runtime.spec import Limits, SandboxSpec

GIB = 1 << 30


def spec(memory: int = 256 << 20, cpus: float = 0.5, **labels) -> SandboxSpec:
    return SandboxSpec(image="debian", limits=Limits(memory=memory, cpus=cpus),
                       labels={f"tumbler.node/{k}": v for k, v in labels.items()})


def three(policy: str) -> Placement:
    p = Placement(policy)
    p.add_node("vm/a", Budget(GIB, 100_000, 4.0), {"zone": "eu"})
    p.add_node("vm/b", Budget(GIB, 100_000, 4.0), {"zone": "eu"})
    p.add_node("vm/c", Budget(2 * GIB, 100_000, 4.0), {"zone": "us", "gpu": "yes"})
    return p


def test_spread_evens_load_and_pack_fills_one_node_first():
    spread = three("spread")
    hosts = [spread.choose(f"s{i}", spec()) for i in range(6)]
    assert {h: hosts.count(h) for h in hosts} == {"vm/a": 2, "vm/b": 2, "vm/c": 2}
    pack = three("pack")
    hosts = [pack.choose(f"p{i}", spec()) for i in range(4)]
    assert len(set(hosts)) == 1          # all on one node while it has room
    first = hosts[0]
    assert pack.choose("p4", spec(memory=GIB)) != first   # full: the next node that fits


def test_labels_budget_and_release():
    p = three("spread")
    assert {p.choose(f"g{i}", spec(gpu="yes")) for i in range(3)} == {"vm/c"}
    with pytest.raises(CapacityExceeded, match="no live node has the labels zone=mars"):
        p.choose("x", spec(zone="mars"))
    with pytest.raises(CapacityExceeded, match=r"vm/a is short of memory.*vm/b is short of memory"):
        p.choose("big", spec(memory=3 * GIB // 2, zone="eu"))
    with pytest.raises(CapacityExceeded, match="short of cpus"):
        p.choose("cpu", spec(cpus=8.0))
    p.release("g0")
    p.release("g0")                       # twice: harmless
    assert p.nodes["vm/c"].memory == 2 * (256 << 20)
    assert p.host_of("g1") == "vm/c" and p.host_of("g0") is None


def test_lost_node_takes_nothing_and_a_found_sandbox_holds_its_place():
    p = three("spread")
    p.lose("vm/a", "its actor died")
    assert {p.choose(f"s{i}", spec()) for i in range(4)} == {"vm/b", "vm/c"}
    p.place("old", "vm/b", Limits(memory=GIB // 2))
    assert p.host_of("old") == "vm/b"
    for host in ("vm/b", "vm/c"):
        p.lose(host, "gone")
    with pytest.raises(CapacityExceeded, match="no live node host"):
        p.choose("z", spec())
    with pytest.raises(InvalidRequest, match="spread, pack"):
        Placement("random")


def test_a_forks_children_go_on_their_sources_node_or_none_do():
    p = three("spread")
    limits = Limits(memory=256 << 20, cpus=0.5)
    p.choose_on("vm/a", ["c1", "c2", "c3"], limits)
    assert {p.host_of(c) for c in ("c1", "c2", "c3")} == {"vm/a"}
    assert p.limits_of("c1") == limits and p.limits_of("nope") is None
    with pytest.raises(CapacityExceeded, match=r"vm/a cannot take 2 more sandboxes of 256 MiB: "
                                               r"it is short of memory \(256 MiB free of 1024\)"):
        p.choose_on("vm/a", ["c4", "c5"], limits)
    assert p.host_of("c4") is None and p.nodes["vm/a"].memory == 3 * (256 << 20)   # none held
    p.lose("vm/b", "its actor died")
    with pytest.raises(CapacityExceeded, match=r"vm/b takes no new sandboxes: it was lost \(its actor died\)"):
        p.choose_on("vm/b", ["c6"], limits)


def test_a_pools_sandboxes_spread_over_the_nodes_whatever_the_policy():
    from tumbler.cluster.placement import GROUP_LABEL
    from tumbler.server.pools import POOL_LABEL
    assert GROUP_LABEL == POOL_LABEL                 # the label the server's pools put on theirs
    p = three("pack")
    pooled = SandboxSpec(image="debian", limits=Limits(memory=64 << 20), labels={GROUP_LABEL: "warm"})
    hosts = [p.choose(f"w{i}", pooled) for i in range(6)]
    assert sorted(hosts) == ["vm/a", "vm/a", "vm/b", "vm/b", "vm/c", "vm/c"]
    assert p.choose("plain", spec()) == "vm/a"        # pack, for the rest: the fullest that fits
    p.release("w0")
    assert p.nodes["vm/a"].groups["warm"] == 1
    assert p.choose("w6", pooled) == "vm/a"           # the node short of the pool's share
    assert p.live_nodes(pooled) == ["vm/a", "vm/b", "vm/c"]
    assert p.live_nodes(spec(zone="eu")) == ["vm/a", "vm/b"]
    p.lose("vm/b", "gone")
    assert p.lost_held() == {f"w{i}" for i, host in enumerate(hosts) if host == "vm/b"}
    assert p.live_nodes(pooled) == ["vm/a", "vm/c"]
    p.add_node("vm/b", Budget(GIB, 100_000, 4.0))    # back: a fresh slot; the lost one's stay lost
    assert len(p.lost_held()) == 2 and p.live_nodes(pooled) == ["vm/a", "vm/b", "vm/c"]


def test_a_released_node_takes_nothing_until_it_is_taken_back():
    p = three("spread")
    assert p.choose("busy", spec()) == "vm/a"
    assert not p.release_node("vm/a")                 # it holds a sandbox: not idle
    assert p.release_node("vm/b") and p.release_node("vm/c")
    assert p.nodes["vm/b"].state == "released"
    assert p.live_nodes(spec()) == ["vm/a"]           # a per-node pool counts a only
    assert p.live_nodes(spec(), released=True) == ["vm/a", "vm/b", "vm/c"]
    assert {p.choose(f"s{i}", spec()) for i in range(3)} == {"vm/a"}   # spread, yet a only
    with pytest.raises(CapacityExceeded, match="short of memory"):
        p.choose("full", spec())
    assert p.wakeable(spec()) == ["vm/b", "vm/c"]     # what can take it back, labels and room
    assert p.wakeable(spec(zone="us")) == ["vm/c"]
    assert p.wakeable(spec(memory=3 * GIB)) == []
    p.add_node("vm/b", Budget(GIB, 100_000, 4.0), {"zone": "eu"})   # its host started again
    assert p.choose("full", spec()) == "vm/b"
    p.drop_node("vm/c")                               # Ray removed the released node
    assert "vm/c" not in p.nodes
