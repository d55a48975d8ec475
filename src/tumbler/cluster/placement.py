"""Where a new sandbox goes: the node host whose budget fits its limits and whose labels match,
by a spread or pack policy. Pure bookkeeping (no Ray): the server's ClusterRuntime and the
control-plane simulation (bench/bench_cluster_sim.py) use it the same way.

A spec asks for node labels through its own labels: `tumbler.node/KEY: VALUE` places it only on
a node whose Ray node label KEY is VALUE (`ray start --labels KEY=VALUE`). Limits (memory,
cpus, pids) are held against each node's budget from placement until removal.

    places = Placement("spread")
    places.add_node("vm/a", Budget(16 << 30, 1 << 20, 64.0), {"zone": "eu"})
    host = places.choose("sb1", spec)          # CapacityExceeded names what no node has
    places.release("sb1")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tumbler.errors import CapacityExceeded, InvalidRequest
from tumbler.runtime.spec import Limits, SandboxSpec

NODE_SELECTOR = "tumbler.node/"
# The server's warm pools label their sandboxes with the pool's name (server/pools.py
# POOL_LABEL): placement spreads each pool over the nodes by how many of it each holds.
GROUP_LABEL = "tumbler.pool"
Policy = Literal["spread", "pack"]
POLICIES = ("spread", "pack")


@dataclass(frozen=True)
class Budget:
    """What one node gives to sandboxes in all (as the server's own node budget, per node)."""

    memory_bytes: int
    pids: int
    cpus: float


@dataclass
class NodeSlot:
    """One node host as placement sees it: its budget, labels, what it holds, and whether it
    takes new sandboxes (a lost or released node does not)."""

    host_id: str
    budget: Budget
    labels: dict[str, str] = field(default_factory=dict)
    held: dict[str, Limits] = field(default_factory=dict)
    memory: int = 0
    cpus: float = 0.0
    pids: int = 0
    lost: str | None = None
    released: bool = False   # its host was ended for being idle; placement may take it back
    groups: dict[str, int] = field(default_factory=dict)   # group (pool) -> sandboxes of it here

    @property
    def serves(self) -> bool:
        """Whether it takes new sandboxes now (neither lost nor released)."""
        return self.lost is None and not self.released

    @property
    def state(self) -> str:
        return "lost" if self.lost is not None else "released" if self.released else "alive"

    def matches(self, wanted: dict[str, str]) -> bool:
        """Whether its labels are those a spec's node selector asks for."""
        return all(self.labels.get(k) == v for k, v in wanted.items())

    def fits(self, limits: Limits, count: int = 1) -> str | None:
        """None if `count` sandboxes of `limits` fit what is left; else what is short, in words."""
        if self.memory + count * limits.memory > self.budget.memory_bytes:
            return (f"memory ({(self.budget.memory_bytes - self.memory) >> 20} MiB free of "
                    f"{self.budget.memory_bytes >> 20})")
        if self.cpus + count * limits.cpus > self.budget.cpus + 1e-9:
            return f"cpus ({self.budget.cpus - self.cpus:g} free of {self.budget.cpus:g})"
        if self.pids + count * limits.pids > self.budget.pids:
            return f"pids ({self.budget.pids - self.pids} free of {self.budget.pids})"
        return None

    def load(self) -> float:
        """The fullest of its budget's dimensions, 0..1: what spread evens out, pack fills."""
        b = self.budget
        return max(self.memory / b.memory_bytes if b.memory_bytes else 1.0,
                   self.cpus / b.cpus if b.cpus else 1.0,
                   self.pids / b.pids if b.pids else 1.0)


def selector(spec: SandboxSpec) -> dict[str, str]:
    """The node labels `spec` asks for (its `tumbler.node/KEY` labels)."""
    return {k[len(NODE_SELECTOR):]: v for k, v in spec.labels.items() if k.startswith(NODE_SELECTOR)}


class Placement:
    """The node slots and the sandboxes placed on them. Not thread-safe: callers hold a lock."""

    def __init__(self, policy: Policy = "spread"):
        if policy not in POLICIES:
            raise InvalidRequest(f"placement policy must be one of {', '.join(POLICIES)}, not {policy!r}")
        self.policy = policy
        self.nodes: dict[str, NodeSlot] = {}
        self._where: dict[str, NodeSlot] = {}
        self._group: dict[str, str] = {}       # sandbox id -> its group, for those in one

    def add_node(self, host_id: str, budget: Budget, labels: dict[str, str] | None = None) -> NodeSlot:
        """A node host that takes sandboxes (again, if it was lost: a fresh slot)."""
        slot = self.nodes[host_id] = NodeSlot(host_id, budget, dict(labels or {}))
        return slot

    def lose(self, host_id: str, reason: str) -> None:
        slot = self.nodes.get(host_id)
        if slot is not None:
            slot.lost = reason

    def release_node(self, host_id: str) -> bool:
        """Take the idle node `host_id` out of placement (its host is to be ended) -> False,
        changing nothing, if it holds a sandbox or does not serve."""
        slot = self.nodes.get(host_id)
        if slot is None or not slot.serves or slot.held:
            return False
        slot.released = True
        return True

    def drop_node(self, host_id: str) -> None:
        """Forget a released node (Ray no longer has it: the autoscaler removed it)."""
        slot = self.nodes.get(host_id)
        if slot is not None and slot.released:
            del self.nodes[host_id]

    def wakeable(self, spec: SandboxSpec) -> list[str]:
        """The released nodes that could take a sandbox of `spec` (labels, an empty budget)."""
        wanted = selector(spec)
        return sorted(n.host_id for n in self.nodes.values() if n.released and n.lost is None
                      and n.matches(wanted) and n.fits(spec.limits) is None)

    def choose(self, sandbox_id: str, spec: SandboxSpec) -> str:
        """Place `sandbox_id` (made to `spec`) on a node and hold its limits there -> the host id.

        CapacityExceeded when no node fits, saying per node what it lacks."""
        wanted = selector(spec)
        live = [n for n in self.nodes.values() if n.serves]
        if not live:
            raise CapacityExceeded("no live node host to place the sandbox on: every node is lost "
                                   "or released, or none offers the tumbler_host resource")
        matching = [n for n in live if n.matches(wanted)]
        if not matching:
            asked = ", ".join(f"{k}={v}" for k, v in wanted.items())
            have = "; ".join(f"{n.host_id}: {_labels(n.labels)}" for n in live)
            raise CapacityExceeded(f"no live node has the labels {asked} (asked by the sandbox's "
                                   f"{NODE_SELECTOR}KEY labels); nodes: {have}")
        fitting, short = [], []
        for node in matching:
            why = node.fits(spec.limits)
            if why is None:
                fitting.append(node)
            else:
                short.append(f"{node.host_id} is short of {why}")
        if not fitting:
            raise CapacityExceeded(
                f"no node can take a sandbox of {spec.limits.memory >> 20} MiB, "
                f"{spec.limits.cpus:g} cpus, {spec.limits.pids} pids: " + "; ".join(short)
                + ". Remove sandboxes, ask for less, or add nodes")
        # spread: the emptiest node; pack: the fullest that fits. Ties go by host id, so a
        # burst over equal nodes goes round them in turn rather than all to one. A pool's
        # sandboxes go first to the node with the fewest of that pool, whatever the policy.
        sign = 1.0 if self.policy == "spread" else -1.0
        group = spec.labels.get(GROUP_LABEL)
        node = min(fitting, key=lambda n: (n.groups.get(group, 0) if group else 0,
                                           sign * n.load(), len(n.held), n.host_id))
        self._hold(node, sandbox_id, spec.limits, group)
        return node.host_id

    def choose_on(self, host_id: str, sandbox_ids: list[str], limits: Limits) -> None:
        """Hold `limits` for each of `sandbox_ids` on the node `host_id` (a fork's children go
        where their source is): all of them, or CapacityExceeded saying what it is short of."""
        node = self.nodes.get(host_id)
        if node is None or not node.serves:
            raise CapacityExceeded(f"node host {host_id} takes no new sandboxes"
                                   + (f": it was lost ({node.lost})" if node is not None and node.lost
                                      else ""))
        why = node.fits(limits, len(sandbox_ids))
        if why is not None:
            raise CapacityExceeded(f"{host_id} cannot take {len(sandbox_ids)} more sandboxes of "
                                   f"{limits.memory >> 20} MiB: it is short of {why}. A fork's "
                                   "sandboxes go on their source's node; remove some there or "
                                   "fork fewer")
        for sandbox_id in sandbox_ids:
            self._hold(node, sandbox_id, limits)

    def limits_of(self, sandbox_id: str) -> Limits | None:
        node = self._where.get(sandbox_id)
        return node.held[sandbox_id] if node is not None else None

    def place(self, sandbox_id: str, host_id: str, limits: Limits, group: str | None = None) -> None:
        """Note a sandbox found on `host_id` (a restart's reconcile): it holds its place there."""
        node = self.nodes.get(host_id)
        if node is not None and sandbox_id not in self._where:
            self._hold(node, sandbox_id, limits, group)

    def lost_held(self) -> set[str]:
        """The sandboxes placed on nodes that were lost (a node that came back since has a
        fresh slot; these stay on the lost one until released)."""
        return {sid for sid, node in self._where.items() if node.lost is not None}

    def live_nodes(self, spec: SandboxSpec, released: bool = False) -> list[str]:
        """The serving nodes (`released`: and the released ones) whose labels `spec`'s node
        selector allows (budget aside)."""
        wanted = selector(spec)
        return [n.host_id for n in self.nodes.values() if n.lost is None
                and (released or not n.released) and n.matches(wanted)]

    def release(self, sandbox_id: str) -> None:
        node = self._where.pop(sandbox_id, None)
        if node is None:
            return
        limits = node.held.pop(sandbox_id)
        group = self._group.pop(sandbox_id, None)
        if group is not None:
            node.groups[group] -= 1
        node.memory -= limits.memory
        node.cpus -= limits.cpus
        node.pids -= limits.pids

    def host_of(self, sandbox_id: str) -> str | None:
        node = self._where.get(sandbox_id)
        return node.host_id if node else None

    def _hold(self, node: NodeSlot, sandbox_id: str, limits: Limits, group: str | None = None) -> None:
        if group is not None:
            node.groups[group] = node.groups.get(group, 0) + 1
            self._group[sandbox_id] = group
        node.held[sandbox_id] = limits
        node.memory += limits.memory
        node.cpus += limits.cpus
        node.pids += limits.pids
        self._where[sandbox_id] = node


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"
