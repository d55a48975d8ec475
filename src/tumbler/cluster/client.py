"""ClusterClient: sandboxes on the nodes of a Ray cluster, one NodeHost per node.

    ray.init(address="auto")
    cluster = ClusterClient()
    cluster.start_hosts()                       # a NodeHost on every node offering the resource
    ids = cluster.create(64, SandboxSpec(image="debian"))
    results = cluster.run([(sid, "echo hi") for sid in ids], timeout=30)
    cluster.close()                             # removes every sandbox, stops the hosts

Calls are batched per host: a batch touching two nodes is two actor calls, in flight together.
Answers keep the order of the request; a failed item holds its `TumblerError` (see nodehost.py).

Node loss: when Ray says a host's actor died or cannot be reached (`ActorDiedError`,
`ActorUnavailableError`), the host is lost for good: its items, and every later call to its
sandboxes, answer `NodeLost`, which names the node and says the sandboxes are gone. The client
also kills the actor (so a host that was only cut off cannot live on beside its successor).
A host that starts on that machine again (same host id) removes what is left of them. Ray's own
verdict on the node (its health check) can take 15-30 s; the client does not wait for it.
Every wait has a timeout (`ClusterConfig`); a host that does not answer in time gives
`CommandTimeout`, and is not declared lost for that.

Release: `release(host_id)` ends an idle host (no sandbox), so that Ray's autoscaler may remove
its node; `start_hosts` then starts none there until a caller names it in `wake`. The released
hosts are kept in Ray's own key-value store (the GCS, in the client's namespace), so a server
SIGKILLed and restarted leaves them released too, instead of starting hosts that would keep
idle nodes from being removed.
"""
from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tumbler.cluster.config import ClusterConfig
from tumbler.cluster.nodehost import DEFAULT_TIMEOUT_S, HostInfo, NodeHost, host_id_for
from tumbler.errors import (CapacityExceeded, CommandTimeout, Conflict, InvalidRequest, NodeLost, NotFound,
                            RuntimeFailure, TumblerError)
from tumbler.models import CommandResult, ExecResult
from tumbler.runtime.spec import SandboxSpec

log = logging.getLogger(__name__)
ACTOR_PREFIX = "tumbler-node-host:"
RELEASED_KEY = "tumbler:released-hosts"   # in Ray's KV: host id -> [node id, address]


def home_for(home: str | None, host_id: str) -> str | None:
    """ClusterConfig.home for the host `host_id`: its `{name}` is the host's name."""
    return home.replace("{name}", host_id.partition("/")[2]) if home else None


def actor_name(host_id: str) -> str:
    """The Ray actor name of the node host `host_id` (in ClusterConfig.namespace)."""
    return ACTOR_PREFIX + host_id


@dataclass(eq=False)
class _Host:
    """One NodeHost actor as the client knows it."""

    host_id: str
    node_id: str
    address: str
    actor: object
    lost: str | None = None      # why it was declared lost; None while it serves
    agents: str | None = None    # HOST:PORT of its agent relay (HostInfo.agents)
    agents_token: str | None = field(default=None, repr=False)   # its secret: never shown

    def gone(self, sandbox_id: str) -> NodeLost:
        return NodeLost(f"sandbox {sandbox_id} is gone: its node host {self.host_id} (Ray node "
                        f"{self.node_id[:12]} at {self.address}) was lost ({self.lost}), and the "
                        "sandboxes there with it. Make new ones; a node host started on that "
                        "machine again removes what is left of them")


@dataclass
class HostState:
    """A node host as `ClusterClient.hosts()` reports it: where it runs, how many sandboxes the
    client routes to it, and why it was declared lost (None while it serves)."""

    host_id: str
    node_id: str
    address: str
    sandboxes: int
    lost: str | None


class ClusterClient:
    """Sandboxes across a Ray cluster. Thread-safe; needs a connected Ray driver (`ray.init`)."""

    def __init__(self, config: ClusterConfig | None = None):
        if not ray.is_initialized():
            raise RuntimeFailure("connect to Ray first: ray.init(address=...)")
        self.config = config or ClusterConfig()
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}     # host id -> its newest actor
        self._where: dict[str, _Host] = {}     # sandbox id -> the actor that made it
        self._lost_nodes: set[str] = set()     # Ray node ids whose host was lost
        self._released = self._load_released()   # host id -> its node, the host ended idle
        self._saving = threading.Lock()            # one write of _released to Ray's KV at a time
        self._turn = itertools.count()
        self._starting = threading.Lock()      # one start_hosts at a time

    # -- hosts --------------------------------------------------------------------------------

    def start_hosts(self, wake: set[str] | frozenset[str] = frozenset()) -> list[HostInfo]:
        """Start a NodeHost on every alive node that offers the resource and has none -> what
        each new host reports (`reclaimed`: its dead predecessor's sandboxes it removed). A
        host that fails raises, after the others are started: the error's `started` holds
        their HostInfos.

        A node whose host was released (`release`) gets none, unless its host id is in
        `wake`. A node whose host was lost gets a new one only if its raylet answers: Ray
        lists a killed node as alive until its health check gives up on it (15-30 s)."""
        with self._starting:
            return self._start_hosts(wake)

    def _start_hosts(self, wake: set[str] | frozenset[str]) -> list[HostInfo]:
        wanted: dict[str, list[dict]] = {}      # host id -> the nodes that would run it
        nodes = [n for n in ray.nodes() if n["Alive"]]
        with self._lock:   # a released node that Ray no longer has is forgotten
            alive = {n["NodeID"] for n in nodes}
            kept = {h: s for h, s in self._released.items() if s.node_id in alive}
            forgot, self._released = len(kept) < len(self._released), kept
            asleep = {s.node_id for h, s in self._released.items() if h not in wake}
        if forgot:
            self._save_released()
        for node in nodes:
            if node["Resources"].get(self.config.resource, 0) < 1:
                continue
            node_id = node["NodeID"]
            with self._lock:
                served = any(h.node_id == node_id and h.lost is None for h in self._hosts.values())
                suspect = node_id in self._lost_nodes
            if served or node_id in asleep or (suspect and not self._raylet_answers(node)):
                continue
            name = (node.get("Labels") or {}).get(self.config.name_label, self.config.default_name)
            wanted.setdefault(host_id_for(node["NodeManagerHostname"], name), []).append(node)
        failures: list[TumblerError] = []
        started = []      # (host id, its nodes, actor, ref of its HostInfo, taken over or new)
        for host_id, nodes in wanted.items():
            clash = self._retire(host_id)
            if clash is not None:
                failures.append(clash)
                continue
            found = self._named(host_id)
            if found is not None:   # a host that outlived the driver before us: take it over
                ref = found.adopt.remote(self.config.owner, self.config.create_timeout_s)
                started.append((host_id, nodes, found, ref, True))
                continue
            try:
                actor = self._actor(host_id, nodes[0]["NodeID"])
            except ValueError as exc:   # its name is taken: a host of that id just died or starts
                failures.append(RuntimeFailure(f"node host {host_id} cannot start yet: {exc}"))
                continue
            started.append((host_id, nodes, actor, actor.info.remote(), False))
        infos, woke = [], False
        deadline = time.monotonic() + self.config.start_timeout_s
        for host_id, nodes, actor, ref, taken in started:
            where = f"the node host {host_id} on Ray node {nodes[0]['NodeID'][:12]}"
            try:
                info = ray.get(ref, timeout=_left(deadline))
            except GetTimeoutError:
                if not taken:    # a host that holds sandboxes is not killed for being slow
                    ray.kill(actor, no_restart=True)
                failures.append(CommandTimeout(f"{where} did not {'answer' if taken else 'start'} "
                                               f"within {self.config.start_timeout_s} s"))
                continue
            except RayTaskError as exc:     # a take-over refused (another server's host)
                failures.append(exc.cause if isinstance(exc.cause, TumblerError) else
                                RuntimeFailure(f"{where}: {_last_line(exc)}"))
                continue
            except RayActorError as exc:
                failures.append(RuntimeFailure(f"{where} failed to start: {_last_line(exc)}"))
                continue
            node_id = info.node_id or nodes[0]["NodeID"]
            node = next((n for n in nodes if n["NodeID"] == node_id), None)
            failures += [self._two_names(host_id, node_id) for n in nodes if n is not node]
            if node is None:    # a host found serving on a node that is not one of these
                continue
            host = _Host(host_id, node_id, node["NodeManagerAddress"], actor,
                         agents=info.agents, agents_token=info.agents_token)
            with self._lock:
                self._hosts[host_id] = host
                self._lost_nodes.discard(node_id)
                woke = self._released.pop(host_id, None) is not None or woke
            infos.append(info)
        if woke:
            self._save_released()
        if failures:
            log.warning("node hosts started: %s", [i.host_id for i in infos])
            error = failures[0] if len(failures) == 1 else type(failures[0])(
                "; ".join(f.message for f in failures))
            error.started = infos   # the hosts that did start (and serve) all the same
            raise error
        return infos

    def hosts(self) -> list[HostState]:
        with self._lock:
            counts: dict[int, int] = {}
            for host in self._where.values():
                counts[id(host)] = counts.get(id(host), 0) + 1
            return [HostState(h.host_id, h.node_id, h.address, counts.get(id(h), 0), h.lost)
                    for h in self._hosts.values()]

    def released(self) -> dict[str, HostState]:
        """The released hosts (host id -> where it ran), on nodes Ray still had at the last
        `start_hosts`."""
        with self._lock:
            return dict(self._released)

    def release(self, host_id: str) -> None:
        """End the idle host `host_id` (it holds no sandbox: Conflict otherwise): its actor
        closes (its ledger goes) and is killed, and `start_hosts` leaves its node without a
        host until a call wakes it. Ray's autoscaler may then remove the idle node."""
        with self._lock:
            host = self._hosts.get(host_id)
            if host is None or host.lost is not None:
                raise NotFound(f"no live node host {host_id} to release")
            if any(h is host for h in self._where.values()):
                raise Conflict(f"node host {host_id} holds sandboxes: it is not idle")
            del self._hosts[host_id]
            self._released[host_id] = HostState(host_id, host.node_id, host.address, 0, None)
        self._save_released()
        try:
            ray.get(host.actor.close.remote(), timeout=self.config.op_timeout_s)
        except RayError as exc:
            log.warning("node host %s did not close cleanly: %s", host_id, _first_line(exc))
        ray.kill(host.actor, no_restart=True)
        self._await_name_free(host_id)
        log.info("node host %s on Ray node %s released (idle)", host_id, host.node_id[:12])

    def _load_released(self) -> dict[str, HostState]:
        """The released hosts a previous client of this namespace left in Ray's KV."""
        raw = _internal_kv_get(RELEASED_KEY, namespace=self.config.namespace)
        if not raw:
            return {}
        try:
            return {h: HostState(h, str(node), str(address), 0, None)
                    for h, (node, address) in json.loads(raw).items()}
        except (ValueError, TypeError) as exc:   # not ours to trust blindly: start afresh
            log.warning("ignoring the released hosts kept in Ray (%s): %s", RELEASED_KEY, exc)
            return {}

    def _save_released(self) -> None:
        # the snapshot is taken under _saving, so the last write holds the newest set
        with self._saving:
            with self._lock:
                doc = {h: [s.node_id, s.address] for h, s in self._released.items()}
            _internal_kv_put(RELEASED_KEY, json.dumps(doc), namespace=self.config.namespace)

    def host_of(self, sandbox_id: str) -> str:
        """The id of the node host that holds `sandbox_id`."""
        return self._route(sandbox_id).host_id

    # -- sandboxes ----------------------------------------------------------------------------

    def create(self, count: int, spec: SandboxSpec | None = None, *, host: str | None = None
               ) -> list[str | TumblerError]:
        """Make `count` sandboxes to `spec`, spread over the live hosts (or all on `host`)."""
        spec = spec or SandboxSpec()
        with self._lock:
            live = sorted((h for h in self._hosts.values() if h.lost is None), key=lambda h: h.host_id)
        if host is not None:
            live = [h for h in live if h.host_id == host]
        if not live:
            raise CapacityExceeded(f"no live node host{f' {host}' if host else ''} to place "
                                   "sandboxes on; start_hosts() first")
        first = next(self._turn)
        places = [live[(first + i) % len(live)] for i in range(count)]
        items = [(h, spec) for h in places]
        results = self._batch("create", items, self.config.create_timeout_s)
        with self._lock:
            for h, result in zip(places, results):
                if isinstance(result, str):
                    self._where[result] = h
        return results

    def run(self, commands: list[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT_S
            ) -> list[CommandResult | TumblerError]:
        """Each (sandbox id, command) in that sandbox's default bash session; `timeout`
        (seconds) bounds each command."""
        return self._routed("run", commands, timeout + self.config.reply_grace_s, timeout)

    def exec(self, commands: list[tuple[str, list[str] | str]], timeout: float = DEFAULT_TIMEOUT_S
             ) -> list[ExecResult | TumblerError]:
        """Each (sandbox id, argv list or /bin/sh string) as one process, waited for."""
        return self._routed("exec", commands, timeout + self.config.reply_grace_s, timeout)

    def call_many(self, calls: list) -> list:
        """Many ops of `tumbler.ops`, as (sandbox id, Op) pairs, each sent to the host that
        holds its sandbox, all at once: each one's parsed result, or the TumblerError it raised."""
        if not calls:
            return []
        wait_s = max(o.timeout for _, o in calls) + self.config.reply_grace_s
        answers = self._routed("call", [(sid, (o.name, o.args, o.body, o.timeout)) for sid, o in calls],
                               wait_s)
        return [a if isinstance(a, TumblerError) else o.parse(*a) for (_, o), a in zip(calls, answers)]

    def sandbox(self, sandbox_id: str) -> "ClusterSandbox":
        """A handle on one of this client's sandboxes (for `HostedEnv`, the model bridge...)."""
        self._route(sandbox_id)   # NotFound now, not at the first call
        return ClusterSandbox(self, sandbox_id)

    def reset(self, ids: list[str]) -> list[None | TumblerError]:
        return self._routed("reset", [(sid, None) for sid in ids], self.config.op_timeout_s)

    def remove(self, ids: list[str]) -> list[None | TumblerError]:
        """Remove sandboxes. One on a lost node counts as removed: it went with its node (what
        is left of it on that machine goes when a node host starts there again)."""
        with self._lock:
            gone = {sid for sid in ids if sid in self._where and self._where[sid].lost is not None}
        live = [sid for sid in ids if sid not in gone]
        answers = iter(self._routed("remove", [(sid, None) for sid in live], self.config.op_timeout_s))
        results = [None if sid in gone else next(answers) for sid in ids]
        with self._lock:
            for sid, result in zip(ids, results):
                if result is None:
                    self._where.pop(sid, None)
        return results

    def close(self, keep_hosts: bool = False) -> None:
        """Remove every sandbox on the live hosts and stop the hosts (each wait bounded).
        `keep_hosts`: leave them serving, sandboxes and all, for the next driver to take over
        (detached hosts only: the others end with this driver)."""
        with self._lock:
            hosts = list(self._hosts.values())
            self._hosts.clear()
            self._where.clear()
        if keep_hosts:
            return
        refs = [(h, h.actor.close.remote()) for h in hosts if h.lost is None]
        deadline = time.monotonic() + self.config.op_timeout_s
        for host, ref in refs:
            try:
                ray.get(ref, timeout=_left(deadline))
            except RayError as exc:
                log.warning("node host %s did not close cleanly: %s", host.host_id, _first_line(exc))
        for host in hosts:
            ray.kill(host.actor, no_restart=True)

    # -- for the server's cluster mode (tumbler.cluster.runtime) -------------------------------

    def host(self, host_id: str) -> _Host:
        """The live or lost host `host_id` (NotFound if the client never started it)."""
        with self._lock:
            host = self._hosts.get(host_id)
        if host is None:
            raise NotFound(f"no node host {host_id} in this cluster")
        return host

    def host_for(self, sandbox_id: str) -> _Host:
        """The host that holds `sandbox_id` (NotFound if none does)."""
        return self._route(sandbox_id)

    def track(self, sandbox_id: str, host_id: str) -> None:
        """Route later calls for `sandbox_id` to `host_id` (made there, or found there)."""
        host = self.host(host_id)
        with self._lock:
            self._where[sandbox_id] = host

    def untrack(self, sandbox_id: str) -> None:
        with self._lock:
            self._where.pop(sandbox_id, None)

    def on_host(self, host_id: str, method: str, payloads: list, wait_s: float) -> list:
        """One `method` batch to one host -> its answers (NodeLost each if it is lost)."""
        host = self.host(host_id)
        if host.lost is not None:
            return [host.gone("(being created)")] * len(payloads)
        return self._batch(method, [(host, p) for p in payloads], wait_s)

    def routed(self, method: str, items: list[tuple[str, object]], wait_s: float, *args) -> list:
        """Each (sandbox id, payload) sent to the host that holds the sandbox, all at once."""
        return self._routed(method, items, wait_s, *args)

    def lose(self, host: _Host, reason: str) -> None:
        """Declare `host` lost (its actor failed a call): its sandboxes answer NodeLost."""
        self._lose(host, reason)

    # -- plumbing -----------------------------------------------------------------------------

    def _actor(self, host_id: str, node_id: str):
        """A new NodeHost actor on `node_id`, named after its host id in the namespace
        (ValueError if that name is taken)."""
        cfg = self.config
        return ray.remote(NodeHost).options(
            num_cpus=0, resources={cfg.resource: 1}, max_restarts=0, max_task_retries=0,
            name=actor_name(host_id), namespace=cfg.namespace,
            lifetime="detached" if cfg.detached else None,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(host_id, home=home_for(cfg.home, host_id), run=cfg.run,
                 start_concurrency=cfg.start_concurrency, owner=cfg.owner,
                 backend=cfg.backend_of(host_id), engine=cfg.engine)

    def _named(self, host_id: str):
        """The live actor named after `host_id` in the namespace, if one is there."""
        try:
            return ray.get_actor(actor_name(host_id), namespace=self.config.namespace)
        except ValueError:
            return None

    def _await_name_free(self, host_id: str) -> None:
        """Wait (up to probe_timeout_s) until Ray has let go of the name of a killed host, so
        that a host started there again at once is not refused it."""
        deadline = time.monotonic() + self.config.probe_timeout_s
        while self._named(host_id) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

    def _raylet_answers(self, node: dict) -> bool:
        """Whether the node's raylet accepts a connection (a dead one refuses, or never answers)."""
        try:
            socket.create_connection((node["NodeManagerAddress"], node["NodeManagerPort"]),
                                     timeout=self.config.probe_timeout_s).close()
        except OSError:
            return False
        return True

    def _retire(self, host_id: str) -> Conflict | None:
        """Before a new host takes `host_id`, make sure the old one is not serving: one still
        answering means two nodes claim one name on one machine (-> a Conflict to report)."""
        with self._lock:
            old = self._hosts.get(host_id)
        if old is None or old.lost is not None:
            return None
        try:
            ray.get(old.actor.info.remote(), timeout=self.config.op_timeout_s)
        except GetTimeoutError:
            self._lose(old, "it did not answer")
            return None
        except RayError as exc:
            self._lose(old, _first_line(exc))
            return None
        return self._two_names(host_id, old.node_id)

    def _two_names(self, host_id: str, node_id: str) -> Conflict:
        return Conflict(f"node host {host_id} already serves on Ray node {node_id[:12]}: give each "
                        f"node on one machine its own name (node label {self.config.name_label})")

    def _route(self, sandbox_id: str) -> _Host:
        with self._lock:
            host = self._where.get(sandbox_id)
        if host is None:
            raise NotFound(f"no sandbox {sandbox_id} in this cluster client")
        return host

    def _routed(self, method: str, items: list[tuple[str, object]], wait_s: float, *args) -> list:
        """Send each (sandbox id, payload) to the host that holds the sandbox."""
        results: list = [None] * len(items)
        pending = []
        for i, (sid, payload) in enumerate(items):
            try:
                host = self._route(sid)
            except NotFound as exc:
                results[i] = exc
                continue
            if host.lost is not None:
                results[i] = host.gone(sid)
            else:
                pending.append((i, host, sid if payload is None else (sid, payload)))
        answers = self._batch(method, [(h, item) for _, h, item in pending], wait_s, *args)
        for (i, _, _), answer in zip(pending, answers):
            results[i] = answer
        return results

    def _batch(self, method: str, items: list[tuple[_Host, object]], wait_s: float, *args) -> list:
        """One `method` call per host over its items, all in flight at once; answers in order."""
        groups: dict[_Host, list[int]] = {}
        for i, (host, _) in enumerate(items):
            groups.setdefault(host, []).append(i)
        refs = [(host, idx, getattr(host.actor, method).remote([items[i][1] for i in idx], *args))
                for host, idx in groups.items()]
        results: list = [None] * len(items)
        deadline = time.monotonic() + wait_s
        for host, idx, ref in refs:
            answers = self._answers(host, method, ref, deadline, wait_s,
                                    [_sandbox_of(items[i][1]) for i in idx])
            for i, answer in zip(idx, answers):
                results[i] = answer
        return results

    def _answers(self, host: _Host, method: str, ref, deadline: float, wait_s: float,
                 sids: list[str | None]) -> list:
        """The host's answer list, or one error per item when the call itself failed."""
        try:
            return ray.get(ref, timeout=_left(deadline))
        except GetTimeoutError:
            ray.cancel(ref)
            error = CommandTimeout(f"node host {host.host_id} did not answer {method} within "
                                   f"{wait_s:g} s")
            return [error] * len(sids)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, TumblerError) else RuntimeFailure(
                f"node host {host.host_id} failed in {method}: {_first_line(exc)}")
            return [cause] * len(sids)
        except RayActorError as exc:
            self._lose(host, _first_line(exc))
        except RayError as exc:   # the object or the raylet went with the node
            self._lose(host, _first_line(exc))
        return [host.gone(sid or "(being created)") for sid in sids]

    def _lose(self, host: _Host, reason: str) -> None:
        with self._lock:
            if host.lost is not None:
                return
            host.lost = reason
            self._lost_nodes.add(host.node_id)
        log.warning("node host %s on Ray node %s is lost: %s", host.host_id, host.node_id[:12], reason)
        try:
            ray.kill(host.actor, no_restart=True)
        except RayError:
            pass


class ClusterSandbox:
    """One cluster sandbox as a sandbox handle: `call` and `do`, like LocalSandbox's."""

    def __init__(self, client: ClusterClient, sandbox_id: str):
        self.client, self.id = client, sandbox_id

    def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = 60.0, on_event=None) -> tuple[dict, bytes]:
        if on_event is not None:
            raise InvalidRequest("on_event is not relayed through a node host")
        [answer] = self.client._routed("call", [(self.id, (op, args or {}, body, timeout))],
                                       timeout + self.client.config.reply_grace_s)
        if isinstance(answer, TumblerError):
            raise answer
        return answer

    def do(self, op):
        """Send one op of `tumbler.ops` and parse its reply."""
        return op.parse(*self.call(op.name, op.args, op.body, timeout=op.timeout))

    def __repr__(self) -> str:
        return f"ClusterSandbox(id={self.id!r})"


def _sandbox_of(item) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, tuple):
        return item[0]
    return None


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _last_line(exc: BaseException) -> str:
    """The exception at the end of a Ray error's remote traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[-1].strip() if lines else type(exc).__name__)[:500]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]
