"""ClusterRuntime: the server's Runtime over the node hosts of a Ray cluster (`tumbler serve --ray`).

The server keeps what it keeps on one machine (records, life cycle, sessions' history, pools,
admission); this class answers its runtime calls by placing each new sandbox on a node host
(`placement.py`: limits against each node's budget, node labels, spread or pack) and sending
every later call for it to that host: life-cycle steps as `NodeHost.runtime_calls`, agent ops
as `NodeHost.call` awaited on the server's event loop (no thread per call). A host that Ray
says is gone turns its sandboxes' calls into NodeLost (ClusterClient), and its node takes no
new sandbox.

Each node gives sandboxes the server's node budget (`node_memory_bytes`, `node_cpus`,
`node_pids`), or what its Ray node declares in the custom resources `tumbler_memory` (bytes)
and `tumbler_cpus` (cores). The service's own admission sums the live nodes' budgets.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.blocking import AgentGone
from tumbler.cluster import images
from tumbler.cluster.agentrelay import dial
from tumbler.cluster.client import ClusterClient, HostState, _first_line
from tumbler.cluster.config import ClusterConfig
from tumbler.cluster.placement import GROUP_LABEL, Budget, Placement, Policy, selector
from tumbler.errors import (CapacityExceeded, CommandTimeout, Conflict, InvalidRequest, NodeLost,
                            RuntimeFailure, TumblerError)
from tumbler.runtime.images import ImageStore
from tumbler.runtime.spec import SandboxInfo, SandboxSpec, SandboxStats

log = logging.getLogger(__name__)

MEMORY_RESOURCE = "tumbler_memory"
CPUS_RESOURCE = "tumbler_cpus"
READY_TIMEOUT_S = 30.0
IMAGE_PARTS_IN_FLIGHT = 4
CONNECT_TIMEOUT_S = 5.0


def connect(address: str) -> None:
    """Join the Ray cluster at `address` ("auto": the one this machine runs) as its driver.
    A HOST:PORT that does not accept a connection is refused at once (Ray itself would retry
    for minutes)."""
    if address != "auto" and not address.startswith("ray://"):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"cannot reach the Ray cluster's head at {address!r} ({exc}): give "
                                 "HOST:PORT of its GCS (6379 by default), or 'auto' on a machine "
                                 "of the cluster") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RuntimeFailure(f"cannot join the Ray cluster at {address!r}: {exc}. Start one "
                                 "(`ray start --head --resources '{\"tumbler_host\": 1}'`) or give "
                                 "its address (HOST:6379)") from None


class ClusterRuntime:
    """Sandboxes on node hosts, as a `tumbler.runtime.base.Runtime` (blocking methods, safe from
    the service's worker threads) plus `agent_client` for the service's agent calls."""

    name = "cluster"

    def __init__(self, budget: Budget, *, policy: Policy = "spread",
                 config: ClusterConfig | None = None):
        self.config = config or ClusterConfig()
        self.client = ClusterClient(self.config)
        self.default_budget = budget
        self.placement = Placement(policy)
        self._lock = threading.Lock()
        self._asked = 0        # nodes last asked of Ray's autoscaler
        self._kept: list[SandboxSpec] = []    # per-node pools' specs: the nodes they allow stay
        self._idle_since: dict[str, float] = {}   # host id -> when it was first seen idle
        self._waking = threading.Lock()       # one released node taken back at a time
        self.store = ImageStore()                        # this server's images, copied to nodes
        images.sweep_packing(self.store)
        self.node_images: dict[str, dict[str, str]] = {}   # host id -> image -> digest it has
        self._image_locks: dict[tuple[str, str], threading.Lock] = {}
        self.image_copies: list[dict] = []               # what was copied where, how fast
        try:
            self.refresh()
        except TumblerError as exc:   # some nodes' hosts: the reaper's passes try them again
            if not any(s.lost is None for s in self.client.hosts()):
                raise
            log.warning("node hosts: %s; serving with the others", exc.message)

    # -- nodes ---------------------------------------------------------------------------------

    def refresh(self, wake: frozenset[str] = frozenset()) -> list[str]:
        """Start node hosts on nodes that have none (joined, or restarted; a released node
        only if `wake` names its host) and take in the sandboxes each already holds -> the ids
        of the hosts started. A host that fails to start raises, once the others are taken in."""
        try:
            infos, failed = self.client.start_hosts(wake), None
        except TumblerError as exc:   # the hosts that started are taken in all the same
            infos, failed = getattr(exc, "started", []), exc
        started = [i.host_id for i in infos]
        nodes = {n["NodeID"]: n for n in ray.nodes()}
        hosts = self.client.hosts()
        known = {*self.client.released(), *(s.host_id for s in hosts)}
        with self._lock:
            for host_id, slot in list(self.placement.nodes.items()):
                if slot.released and host_id not in known:
                    self.placement.drop_node(host_id)   # Ray no longer has its node
            for state in hosts:
                slot = self.placement.nodes.get(state.host_id)
                if state.lost is not None:
                    self.placement.lose(state.host_id, state.lost)
                elif slot is None or slot.lost is not None or state.host_id in started:
                    self._add_slot(state, nodes)
            for host_id, state in self.client.released().items():
                if host_id not in self.placement.nodes:   # released before this server started
                    self._add_slot(state, nodes).released = True
        for host_id in started:
            for info in self._on_host(host_id, "list", ()):
                self._found(info, host_id)
        if failed is not None:
            raise failed
        return started

    def nodes(self) -> list[dict]:
        """Each node host: id, address, labels, backend, budget, what it holds, and its state
        (alive, lost, or released: ended for being idle)."""
        self._sync_lost()
        states = {**self.client.released(), **{s.host_id: s for s in self.client.hosts()}}
        with self._lock:
            out = []
            for slot in self.placement.nodes.values():
                state = states.get(slot.host_id)
                out.append({"host_id": slot.host_id, "labels": dict(slot.labels),
                            "address": state.address if state else None,
                            "backend": self.config.backend_of(slot.host_id),
                            "node_id": state.node_id if state else None,
                            "budget": {"memory_bytes": slot.budget.memory_bytes,
                                       "pids": slot.budget.pids, "cpus": slot.budget.cpus},
                            "admitted": {"memory_bytes": slot.memory, "pids": slot.pids,
                                         "cpus": slot.cpus},
                            "sandbox_ids": list(slot.held),
                            "images": dict(self.node_images.get(slot.host_id, {})),
                            "state": slot.state, "lost": slot.lost})
            return out

    @property
    def cold_starts(self) -> int:
        """Creates the server lets go at once: each live host starts `start_concurrency`."""
        with self._lock:
            live = sum(1 for n in self.placement.nodes.values() if n.serves)
        return max(1, live) * self.config.start_concurrency

    def total_budget(self) -> Budget:
        """The live nodes' budgets summed, the released ones' too (placement takes them back
        when the others are full): what the service admits in all."""
        with self._lock:
            live = [n.budget for n in self.placement.nodes.values() if n.lost is None]
        return Budget(sum(b.memory_bytes for b in live), sum(b.pids for b in live),
                      sum(b.cpus for b in live))

    def live_budget(self) -> "LiveBudget":
        """A budget for the service's admission that follows nodes joining and being lost."""
        return LiveBudget(self)

    def check_hosts(self) -> None:
        """Ask each live host how it is; one whose actor or node is gone is declared lost (a
        slow answer is not: a slow node must not lose its sandboxes)."""
        for state in self.client.hosts():
            if state.lost is not None:
                continue
            host = self.client.host(state.host_id)
            try:
                ray.get(host.actor.info.remote(), timeout=self.config.probe_timeout_s)
            except GetTimeoutError:
                log.warning("node host %s did not answer within %g s", host.host_id,
                            self.config.probe_timeout_s)
            except RayError as exc:
                self.client.lose(host, _first_line(exc))
        self._sync_lost()

    def lost_sandboxes(self) -> dict[str, str]:
        """The sandboxes of the lost nodes (checked now) -> what NodeLost says of each. Also
        starts hosts on nodes that joined (or came back: the new host reclaims what the lost
        one left there). The server's reaper calls this at each pass."""
        self.check_hosts()
        try:
            self.refresh()
        except TumblerError as exc:   # a node whose host will not start: the others serve on
            log.warning("node hosts: %s", exc.message)
        self.release_idle()
        states = {s.host_id: s for s in self.client.hosts()}
        with self._lock:
            held = [(sid, slot.host_id) for slot in self.placement.nodes.values() if slot.lost
                    for sid in slot.held]
        out = {}
        for sid, host_id in held:
            host = self.client.host(host_id) if host_id in states else None
            out[sid] = host.gone(sid).message if host is not None else f"its node {host_id} was lost"
        return out

    def remove_unknown(self, known: set[str]) -> list[str]:
        """Remove every sandbox on the live hosts that is not in `known` (the registry's ids)
        -> their ids. At a restart this ends what the dead server had forgotten: a sandbox a
        host holds that no record names would otherwise run, unreachable, for as long as the
        host lives."""
        unknown = [info.id for info in self.list() if info.id not in known]
        if not unknown:
            return []
        answers = self.client.routed("runtime_calls", [(sid, ("remove", (sid,))) for sid in unknown],
                                     self.config.op_timeout_s)
        removed = []
        for sid, answer in zip(unknown, answers):
            if isinstance(answer, TumblerError):
                log.warning("sandbox %s, which no record names: not removed: %s", sid, answer.message)
                continue
            self.client.untrack(sid)
            with self._lock:
                self.placement.release(sid)
            removed.append(sid)
        return removed

    def keep_nodes(self, specs: list[SandboxSpec]) -> None:
        """The specs of the per-node pools (per_node > 0): a node that one of them allows has
        a pool target on it, so it is never idle (the server's pools set this)."""
        with self._lock:
            self._kept = list(specs)

    def release_idle(self) -> list[str]:
        """Release the node hosts that have held no sandbox and no per-node pool's target for
        `idle_release_s` (with autoscaling on) -> their ids: each is ended, its node marked
        released, and the standing autoscaler request lowered to the hosts left. The reaper's
        pass calls this."""
        idle_s = self.config.idle_release_s
        if not idle_s or not self.config.autoscale_max_nodes:
            return []
        now = time.monotonic()
        chosen = []
        with self._lock:
            kept = [selector(spec) for spec in self._kept]
            for host_id, slot in self.placement.nodes.items():
                if not slot.serves or slot.held or any(slot.matches(w) for w in kept):
                    self._idle_since.pop(host_id, None)
                elif now - self._idle_since.setdefault(host_id, now) >= idle_s \
                        and self.placement.release_node(host_id):
                    self._idle_since.pop(host_id)
                    chosen.append(host_id)
        released = []
        with self._waking:   # not while a create takes a released node back
            for host_id in chosen:
                try:
                    self.client.release(host_id)
                except TumblerError as exc:   # a sandbox routed there after all: it serves on
                    log.warning("node host %s not released: %s", host_id, exc.message)
                    with self._lock:
                        self.placement.nodes[host_id].released = False
                    continue
                released.append(host_id)
        if released:
            with self._lock:
                live = sum(1 for n in self.placement.nodes.values() if n.serves)
            self._request_nodes(live)
        return released

    def node_count(self, spec: SandboxSpec) -> int:
        """How many live nodes `spec`'s node labels allow (a per-node pool's multiplier).
        Released nodes do not count, except that when all it allows are released it counts
        one: the pool's refill then takes one back."""
        self._sync_lost()
        with self._lock:
            live = len(self.placement.live_nodes(spec))
            return live or min(1, len(self.placement.live_nodes(spec, released=True)))

    def lost_ids(self) -> set[str]:
        """The sandboxes held on lost nodes, as last found (no Ray call: the reaper's pass,
        `lost_sandboxes`, probes the hosts)."""
        self._sync_lost()
        with self._lock:
            return self.placement.lost_held()

    def host_of(self, sandbox_id: str) -> str | None:
        """The node host `sandbox_id` is placed on (None if it is not)."""
        with self._lock:
            return self.placement.host_of(sandbox_id)

    def close(self, keep_hosts: bool = False) -> None:
        """Stop the node hosts (each removes what it still holds); `keep_hosts` (the server's
        keep_sandboxes): leave them serving, for the next server to take over."""
        self.client.close(keep_hosts=keep_hosts and self.config.detached)

    # -- the Runtime ---------------------------------------------------------------------------

    def create(self, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
        sandbox_id = sandbox_id or secrets.token_hex(6)
        self._sync_lost()
        try:
            host_id = self._choose(sandbox_id, spec)
        except CapacityExceeded as exc:
            asked = self._ask_for_a_node(spec)
            if asked:
                raise CapacityExceeded(f"{exc.message}. Asked Ray's autoscaler for {asked} nodes "
                                       f"with {self.config.resource}; try again once one joins") from None
            raise
        try:
            self._ensure_image(host_id, spec.image)
            info = self._on_host(host_id, "create", (spec, sandbox_id), sandbox_id)
        except BaseException:
            with self._lock:
                self.placement.release(sandbox_id)
            raise
        self.client.track(sandbox_id, host_id)
        return info

    def start(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "start")

    def stop(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "stop")

    def reset(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "reset")

    def pause(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "pause")

    def resume(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "resume")

    def get(self, sandbox_id: str) -> SandboxInfo:
        return self._routed(sandbox_id, "get")

    def stats(self, sandbox_id: str) -> SandboxStats:
        return self._routed(sandbox_id, "stats")

    def snapshot(self, sandbox_id: str, image: str) -> str:
        return self._routed(sandbox_id, "snapshot", image)

    def fork(self, sandbox_id: str, child_ids: list[str],
             labels: dict[str, str] | None = None) -> list[SandboxInfo]:
        """The runtime's fork on the source's node host: the children land on its node (their
        limits held there first: CapacityExceeded if it has no room for all of them)."""
        self._sync_lost()
        host_id = self.client.host_of(sandbox_id)
        limits = self.get(sandbox_id).spec.limits
        with self._lock:
            self.placement.choose_on(host_id, child_ids, limits)
        try:
            infos = self._routed(sandbox_id, "fork", child_ids, labels)
        except BaseException:
            with self._lock:
                for child in child_ids:
                    self.placement.release(child)
            raise
        for info in infos:
            self.client.track(info.id, host_id)
        return infos

    def remove(self, sandbox_id: str) -> None:
        try:
            self._routed(sandbox_id, "remove")
        except NodeLost:
            pass   # it went with its node; a host started there again removes what is left
        self.client.untrack(sandbox_id)
        with self._lock:
            self.placement.release(sandbox_id)

    def list(self) -> list[SandboxInfo]:
        out = []
        for state in self.client.hosts():
            if state.lost is None:
                for info in self._on_host(state.host_id, "list", ()):
                    self._found(info, state.host_id)
                    out.append(info)
        return out

    def agent_socket(self, sandbox_id: str) -> str:
        raise InvalidRequest(f"sandbox {sandbox_id} runs on a node host: its agent is reached "
                             "through the host, not a socket here")

    # -- agents --------------------------------------------------------------------------------

    def agent_client(self, sandbox_id: str, on_lost=None) -> "RemoteAgent | DirectAgent":
        """What the service calls the sandbox's agent through (AsyncAgentClient's `call`): its
        node host's relay where the host has one, else the host's actor."""
        host = self.client.host_for(sandbox_id)
        if self.config.direct_agents and host.agents and host.lost is None:
            return DirectAgent(self, host, sandbox_id)
        return RemoteAgent(self, sandbox_id)

    def wait_agent(self, sandbox_id: str, timeout: float = READY_TIMEOUT_S, op: str = "health",
                   args: dict | None = None) -> None:
        """Block until the sandbox's agent answers `op` (a warm pool's sandboxes are handed
        over ready)."""
        [answer] = self.client.routed("call", [(sandbox_id, (op, args or {}, b"", timeout))],
                                      timeout + self.config.reply_grace_s)
        if isinstance(answer, TumblerError):
            raise answer

    # -- plumbing ------------------------------------------------------------------------------

    def _choose(self, sandbox_id: str, spec: SandboxSpec) -> str:
        """Place `sandbox_id` on a serving node; if none has room, take back a released node
        that has (its host started again) and place it there. CapacityExceeded if neither."""
        try:
            with self._lock:
                return self.placement.choose(sandbox_id, spec)
        except CapacityExceeded:
            with self._lock:
                if not self.placement.wakeable(spec):
                    raise
        with self._waking:
            try:   # another create may have taken one back meanwhile
                with self._lock:
                    return self.placement.choose(sandbox_id, spec)
            except CapacityExceeded as exc:
                short = exc
            with self._lock:
                wakeable = self.placement.wakeable(spec)
            for host_id in wakeable:
                try:
                    started = self.refresh(wake=frozenset([host_id]))
                except TumblerError as exc:
                    log.warning("released node host %s not taken back: %s", host_id, exc.message)
                    continue
                if host_id in started:
                    log.info("released node host %s taken back: no room on the others", host_id)
                    with self._lock:
                        return self.placement.choose(sandbox_id, spec)
            raise short

    def _routed(self, sandbox_id: str, method: str, *args):
        self._sync_lost()
        [answer] = self.client.routed("runtime_calls", [(sandbox_id, (method, (sandbox_id, *args)))],
                                      self.config.op_timeout_s)
        if isinstance(answer, TumblerError):
            raise answer
        return answer

    def _on_host(self, host_id: str, method: str, args: tuple, sandbox_id: str | None = None):
        [answer] = self.client.on_host(host_id, "runtime_calls", [(sandbox_id, (method, args))],
                                       self.config.create_timeout_s)
        if isinstance(answer, TumblerError):
            raise answer
        return answer

    def _found(self, info: SandboxInfo, host_id: str) -> None:
        self.client.track(info.id, host_id)
        with self._lock:
            self.placement.place(info.id, host_id, info.spec.limits,
                                 info.spec.labels.get(GROUP_LABEL))

    def _sync_lost(self) -> None:
        """Nodes the client found lost take no new sandboxes."""
        for state in self.client.hosts():
            if state.lost is not None:
                with self._lock:
                    self.placement.lose(state.host_id, state.lost)

    # -- images across nodes (cluster/images.py) -------------------------------------------------

    def _ensure_image(self, host_id: str, image: str) -> None:
        """Before a sandbox of `image` is made on `host_id`: send the layers the node lacks
        from this server's store, base first, each verified by its digest there. Nothing to do
        when this server has no such image (the node's own store decides), copy_images is off,
        or the node is a docker one (its engine's images)."""
        if (not self.config.copy_images or self.config.backend_of(host_id) == "docker"
                or not self.store.exists(image)):
            return
        layers = images.chain(self.store, image)
        want = {name: images.digest(self.store, name) for name, _ in layers}
        with self._lock:
            lock = self._image_locks.setdefault((host_id, image), threading.Lock())
            have = self.node_images.setdefault(host_id, {})
        with lock:
            missing = [(name, parent) for name, parent in layers if have.get(name) != want[name]]
            if not missing:
                return
            theirs = self._host_call(host_id, "image_digests", [n for n, _ in missing])
            for name, parent in missing:
                if theirs.get(name) not in (None, want[name]):
                    raise Conflict(
                        f"image {name!r} on node host {host_id} is not this server's (digest "
                        f"{theirs[name][:19]}..., the server's {want[name][:19]}...): remove it "
                        f"there (`tumbler image rm {name}` on that node) or name one of them anew")
                if theirs.get(name) is None:
                    self._copy_layer(host_id, name, parent, want[name])
                have[name] = want[name]

    def _copy_layer(self, host_id: str, name: str, parent: str | None, digest: str) -> None:
        """One layer to one node: packed here, sent in parts (a few in flight), checked and
        unpacked there. Progress goes to the log."""
        host = self.client.host(host_id)
        where = f"image {name!r} to node host {host_id}"
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=images.packing_prefix(), dir=self.store.root) as tmp:
            tar = Path(tmp) / "layer.tar"
            if images.pack(self.store, name, tar) != digest:
                raise RuntimeFailure(f"{where}: the image changed while it was being copied")
            size = tar.stat().st_size
            transfer = self._host_call(host_id, "image_begin", size)
            log.info("copying %s: %d MiB", where, size >> 20)
            pending, sent, shown = [], 0, 0
            deadline = started + self.config.image_timeout_s
            with open(tar, "rb") as fh:
                while True:
                    chunk = fh.read(images.PART_BYTES)
                    if chunk:
                        pending.append((len(chunk), host.actor.image_part.remote(transfer, sent, chunk)))
                        sent += len(chunk)
                    while pending and (len(pending) >= IMAGE_PARTS_IN_FLIGHT or not chunk):
                        part, ref = pending.pop(0)
                        self._answer(host, ref, where, deadline)
                        done = sent - sum(n for n, _ in pending)
                        if size and done * 4 // size > shown:
                            shown = done * 4 // size
                            log.info("copying %s: %d%%", where, 25 * shown)
                    if not chunk:
                        break
            self._host_call(host_id, "image_finish", transfer, name, parent, digest, f"copy:{digest}")
        seconds = time.monotonic() - started
        self.image_copies.append({"image": name, "host_id": host_id, "bytes": size,
                                  "seconds": round(seconds, 3)})
        log.info("copied %s: %d MiB in %.1f s", where, size >> 20, seconds)

    def _host_call(self, host_id: str, method: str, *args):
        """One call of a node host's own (not a batch) -> its answer; its failure as a
        TumblerError that names the host."""
        host = self.client.host(host_id)
        if host.lost is not None:
            raise host.gone("(an image copy)")
        deadline = time.monotonic() + self.config.image_timeout_s
        return self._answer(host, getattr(host.actor, method).remote(*args),
                            f"node host {host_id} in {method}", deadline)

    def _answer(self, host, ref, where: str, deadline: float):
        try:
            return ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except GetTimeoutError:
            ray.cancel(ref)
            raise CommandTimeout(f"{where}: no answer within {self.config.image_timeout_s:g} s") from None
        except RayTaskError as exc:
            if isinstance(exc.cause, TumblerError):
                raise exc.cause from None
            raise RuntimeFailure(f"{where}: {_first_line(exc)}") from None
        except RayError as exc:
            self.client.lose(host, _first_line(exc))
            raise host.gone("(an image copy)") from None

    def _ask_for_a_node(self, spec: SandboxSpec) -> int:
        """No room for `spec` on the live nodes its labels allow: ask Ray's autoscaler for one
        node more than are live (`autoscale_max_nodes` in all) -> the nodes asked for, 0 if
        it did not ask. The request stands until the next (Ray's request_resources)."""
        cap = self.config.autoscale_max_nodes
        with self._lock:
            # Ray counts the released nodes too (they offer the resource): one more than all
            live = sum(1 for n in self.placement.nodes.values() if n.lost is None)
            if live and not self.placement.live_nodes(spec, released=True):
                return 0    # a label no live node has: another node of the same kind would not
                            # either (with none at all, a cluster scaled to zero, ask)
        wanted = min(cap, live + 1)
        if wanted <= live:
            return 0
        if wanted != self._asked:
            self._request_nodes(wanted)
            log.info("no room for a sandbox: asked Ray's autoscaler for %d nodes with %s",
                     wanted, self.config.resource)
        return wanted

    def _request_nodes(self, count: int) -> None:
        """The standing request to Ray's autoscaler: `count` nodes offering the resource."""
        from ray.autoscaler.sdk import request_resources
        request_resources(bundles=[{self.config.resource: 1}] * count)
        self._asked = count

    def _add_slot(self, state: HostState, nodes: dict[str, dict]):
        """A placement slot for the host `state` (a HostState), its budget and labels its Ray
        node's (`nodes`: Ray's, by node id)."""
        node = nodes.get(state.node_id, {})
        return self.placement.add_node(state.host_id, self._budget_of(node), node.get("Labels") or {})

    def _budget_of(self, node: dict) -> Budget:
        res = node.get("Resources") or {}
        b = self.default_budget
        return Budget(int(res.get(MEMORY_RESOURCE, b.memory_bytes)), b.pids,
                      float(res.get(CPUS_RESOURCE, b.cpus)))


class LiveBudget:
    """`server.capacity.Budget`'s fields, read off the cluster's live nodes at each look."""

    def __init__(self, runtime: ClusterRuntime):
        self._runtime = runtime

    @property
    def memory_bytes(self) -> int:
        return self._runtime.total_budget().memory_bytes

    @property
    def pids(self) -> int:
        return self._runtime.total_budget().pids

    @property
    def cpus(self) -> float:
        return self._runtime.total_budget().cpus


class RemoteAgent:
    """A sandbox's agent through its node host: `call` as AsyncAgentClient's, awaited on the
    caller's loop (a Ray object ref is awaitable), node loss -> NodeLost, no answer -> CommandTimeout."""

    def __init__(self, runtime: ClusterRuntime, sandbox_id: str):
        self.runtime, self.sandbox_id = runtime, sandbox_id

    async def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = 60.0, on_event=None) -> tuple[dict, bytes]:
        client = self.runtime.client
        host = client.host_for(self.sandbox_id)
        if host.lost is not None:
            raise host.gone(self.sandbox_id)
        wait_s = timeout + self.runtime.config.reply_grace_s
        if on_event is None:
            ref = host.actor.call.remote([(self.sandbox_id, (op, args or {}, body, timeout))])
            answer = asyncio.wrap_future(ref.future())
        else:   # the events relayed as the host gets them (a Ray streaming generator)
            ref = host.actor.call_stream.options(num_returns="streaming").remote(
                self.sandbox_id, op, args or {}, body, timeout)
            answer = _relay(ref, on_event)
        try:
            [answer] = await asyncio.wait_for(answer, wait_s)
        except asyncio.TimeoutError:
            ray.cancel(ref)
            raise CommandTimeout(f"node host {host.host_id} did not answer {op} for sandbox "
                                 f"{self.sandbox_id} within {wait_s:g} s") from None
        except RayTaskError as exc:
            if isinstance(exc.cause, TumblerError):
                raise exc.cause from None
            raise RuntimeFailure(f"node host {host.host_id} failed in {op}: {_first_line(exc)}") from None
        except (RayActorError, RayError) as exc:
            client.lose(host, _first_line(exc))
            raise host.gone(self.sandbox_id) from None
        if isinstance(answer, TumblerError):
            raise answer
        return answer

    async def close(self) -> None:
        pass   # the host holds the connection; nothing of it lives here


class DirectAgent:
    """A sandbox's agent over a TCP connection to its node host's relay (`agentrelay.py`): the
    frames, caps and timeouts of a local agent (an `AsyncAgentClient`), `start`/`outcome`
    included, so the server's run stream answers from the reply's callback as on one node.
    A dropped connection is an agent hang-up or a node host gone: the host's actor is asked
    which, and a host that does not answer is declared lost (its sandboxes' calls: NodeLost)."""

    def __init__(self, runtime: ClusterRuntime, host, sandbox_id: str):
        self.runtime, self.host, self.sandbox_id = runtime, host, sandbox_id
        self._client = AsyncAgentClient(
            f"the relay of node host {host.host_id} at {host.agents}",
            connect=dial(host.agents, host.agents_token, sandbox_id))
        self._checking: asyncio.Task | None = None

    async def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = 60.0, on_event=None) -> tuple[dict, bytes]:
        if self.host.lost is not None:
            raise self.host.gone(self.sandbox_id)
        try:
            return await self._client.call(op, args, body, timeout=timeout, on_event=on_event)
        except AgentGone:
            await self._check_host()
            if self.host.lost is not None:
                raise self.host.gone(self.sandbox_id) from None
            raise

    def start(self, op: str, args: dict | None = None, body: bytes = b"", *, timeout: float,
              on_event=None):
        if self.host.lost is not None:
            return None   # call() answers NodeLost
        return self._client.start(op, args, body, timeout=timeout, on_event=on_event)

    def outcome(self, future: asyncio.Future, op: str) -> tuple[dict, bytes]:
        if self.host.lost is not None and not future.cancelled() and future.exception() is not None:
            raise self.host.gone(self.sandbox_id)
        try:
            return self._client.outcome(future, op)
        except AgentGone:   # answered now; whether the host lives is found out beside it
            if self._checking is None or self._checking.done():
                self._checking = asyncio.ensure_future(self._check_host())
            raise

    async def close(self) -> None:
        await self._client.close()
        if self._checking is not None:
            self._checking.cancel()

    async def _check_host(self) -> None:
        """Ask the host's actor whether it lives; one that failed is declared lost."""
        host = self.host
        if host.lost is not None:
            return
        ref = host.actor.info.remote()
        try:
            await asyncio.wait_for(asyncio.wrap_future(ref.future()),
                                   self.runtime.config.probe_timeout_s)
        except asyncio.TimeoutError:   # slow is not lost (as the client's own rule)
            ray.cancel(ref)
        except (RayActorError, RayError) as exc:
            self.runtime.client.lose(host, _first_line(exc))


async def _relay(stream, on_event) -> list:
    """Pass on a NodeHost.call_stream's events as they come -> [its answer], as `call` gives it."""
    async for ref in stream:
        kind, value = await ref
        if kind == "events":
            for header, chunk in value:
                on_event(header, chunk)
        else:
            return [value]   # the reply, or the TumblerError that the caller raises
    raise RuntimeFailure("the node host's stream ended without an answer")
