"""Warm pools: sandboxes started ahead of demand, so that `create` is a handover.

A pool holds running sandboxes made to one spec (labels aside: they are the caller's), each
with its agent already answering. `take(spec)` pops one in O(1) if some pool's spec matches;
a background task per pool refills it to its target size. Pools are named and resizable at
run time; their sandboxes count against the node budget like any other.

A pool may be sized per node (`per_node`): its target is that many on each live node the
spec's `tumbler.node/` labels allow (one node outside cluster mode). In cluster mode a watch
task follows the nodes: the target grows when a node joins and shrinks when one is lost, the
pooled sandboxes of a lost node leave the pool at once (they went with it) and the refill
makes their replacements on the nodes left; placement spreads a pool's sandboxes over the
nodes by how many of that pool each holds (`tumbler.cluster.placement`). The runtime is told
the per-node pools' specs (`keep_nodes`): a node one of them allows is never idle, so its host
is not released for Ray's autoscaler to remove the node.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field

from tumbler import ops, wire
from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.errors import InvalidRequest, NotFound
from tumbler.runtime.base import Runtime
from tumbler.sandboxhost import make
from tumbler.runtime.spec import SandboxInfo, SandboxSpec
from tumbler.server.capacity import Admission

log = logging.getLogger(__name__)

AGENT_READY_TIMEOUT_S = 30.0
RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
WATCH_INTERVAL_S = 1.0   # cluster mode: how often pools look at the nodes (no Ray call: the
                         # reaper's pass probes the hosts; this reads what it found)
MAX_POOL_SIZE = 10_000
# Sandboxes one pool has starting at once. A start's CPU-bound part (runc, mounts) is gated by
# the manager's `concurrency`; its wait for the agent is not: a small CPU limit stretches the
# agent's and its spare bash's start to most of a second of waiting (0.64-0.72 s at 0.1 CPU
# against 0.05-0.07 s at 1 CPU), and a pool that waited for each before making the next
# filled at about one sandbox a second whatever the machine had free.
MAX_STARTING = 16
REMOVE_TRIES = 3
# On the runtime's record of a pooled sandbox: a server finds the orphans it left by them
# (several servers may share one runtime home; each reclaims only its own).
POOL_LABEL = "tumbler.pool"
OWNER_LABEL = "tumbler.pool-owner"


def pool_key(spec: SandboxSpec) -> str:
    """What must match for a pooled sandbox to serve a request: all of the spec but labels."""
    return spec.model_copy(update={"labels": {}}).model_dump_json()


@dataclass
class WarmPool:
    name: str
    spec: SandboxSpec
    size: int
    per_node: int | None = None
    ready: collections.deque = field(default_factory=collections.deque)
    starting: int = 0
    handed_out: int = 0
    last_error: str | None = None
    failures: int = 0             # starts failed in a row (the refill backs off)
    starts: set = field(default_factory=set)   # start tasks under way
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def status(self) -> wire.PoolOut:
        return wire.PoolOut(name=self.name, size=self.size, per_node=self.per_node,
                            ready=len(self.ready),
                            starting=self.starting, handed_out=self.handed_out,
                            last_error=self.last_error, image=self.spec.image,
                            spec=self.spec)


class PoolManager:
    """The server's warm pools; a `SandboxSource` for `SandboxService.create`."""

    def __init__(self, runtime: Runtime, *, owner: str = "", admission: Admission | None = None,
                 concurrency: int = 2):
        self.runtime = runtime
        self.owner = owner
        # Pooled sandboxes hold their place in the node budget from the moment they start;
        # the place passes to the taker at handover.
        self.admission = admission
        self._pools: dict[str, WarmPool] = {}
        # Removals in flight: they outlive the refill task that began them (it may be
        # cancelled mid-way), and close() waits for them, so none is lost at shutdown.
        self._removing: set[asyncio.Task] = set()
        # Starting sandboxes costs CPU (runc, python); two at once keeps a 2-core node usable.
        self._starts = asyncio.Semaphore(concurrency)
        self._watcher: asyncio.Task | None = None   # cluster mode: follows the nodes

    async def take(self, spec: SandboxSpec) -> SandboxInfo | None:
        key = pool_key(spec)
        for pool in self._pools.values():
            if pool.ready and pool_key(pool.spec) == key:
                info = pool.ready.popleft()
                self._release(f"pool:{info.id}")
                pool.handed_out += 1
                pool.wake.set()
                return info
        return None

    def set(self, name: str, spec: SandboxSpec, size: int, per_node: int | None = None) -> wire.PoolOut:
        """Create pool `name`, or change its spec or size (`per_node`: that many on each live
        node instead); refilling starts at once."""
        if not 0 <= size <= MAX_POOL_SIZE:
            raise InvalidRequest(f"pool size must be between 0 and {MAX_POOL_SIZE}, not {size}")
        if per_node is not None and not 0 <= per_node <= MAX_POOL_SIZE:
            raise InvalidRequest(f"per_node must be between 0 and {MAX_POOL_SIZE}, not {per_node}")
        pool = self._pools.get(name)
        spec = spec.model_copy(update={"labels": {POOL_LABEL: name, OWNER_LABEL: self.owner}})
        if per_node is not None:
            size = self._per_node_size(spec, per_node)
        if pool is None or pool_key(pool.spec) != pool_key(spec):
            if pool is not None:
                self._drop_later(pool)
            pool = WarmPool(name=name, spec=spec, size=size)
            self._pools[name] = pool
            pool.task = asyncio.create_task(self._refill(pool), name=f"pool-{name}")
        pool.size, pool.per_node = size, per_node
        self._keep_nodes()
        while len(pool.ready) > size:  # shrink now, so that the answer is the new state
            self._remove_later(pool.ready.pop().id)
        pool.wake.set()
        if self._watcher is None and hasattr(self.runtime, "lost_ids"):
            self._watcher = asyncio.create_task(self._watch(), name="pools-follow-nodes")
        return self._status(pool)

    def resize(self, name: str, size: int) -> wire.PoolOut:
        pool = self._get(name)
        return self.set(name, pool.spec, size)

    def list(self) -> list[wire.PoolOut]:
        return [self._status(p) for p in self._pools.values()]

    def follow_nodes(self) -> None:
        """Cluster mode: take the pooled sandboxes of lost nodes out of their pools (they went
        with their node; the refill replaces them on the nodes left) and size each per-node
        pool by the live nodes now."""
        lost = self.runtime.lost_ids()
        for pool in list(self._pools.values()):
            gone = [info for info in pool.ready if info.id in lost]
            for info in gone:
                pool.ready.remove(info)
                self._remove_later(info.id)   # untracked and its place released; no host call
            size = pool.size if pool.per_node is None else self._per_node_size(pool.spec, pool.per_node)
            if gone or size != pool.size:
                if size != pool.size:
                    log.info("pool %s: %d -> %d sandboxes (%d per node)", pool.name, pool.size,
                             size, pool.per_node)
                pool.size = size
                pool.wake.set()

    def remove(self, name: str) -> None:
        self._drop_later(self._pools.pop(name, None) or self._get(name))
        self._keep_nodes()

    async def reclaim_orphans(self, known: set[str]) -> int:
        """Remove pooled sandboxes that no record knows: left waiting by a server that was
        killed. Returns how many were removed."""
        infos = await asyncio.to_thread(self.runtime.list)
        orphans = [i.id for i in infos if POOL_LABEL in i.spec.labels and i.id not in known
                   and i.spec.labels.get(OWNER_LABEL) == self.owner]
        for sandbox_id in orphans:
            await asyncio.to_thread(self.runtime.remove, sandbox_id)
        return len(orphans)

    async def close(self) -> None:
        """Stop refilling and remove every sandbox still waiting in a pool."""
        if self._watcher is not None:
            self._watcher.cancel()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await self._drop(pool)
        while self._removing:   # a drop under way starts removals of its own
            await asyncio.gather(*list(self._removing), return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    def _per_node_size(self, spec: SandboxSpec, per_node: int) -> int:
        count = getattr(self.runtime, "node_count", None)   # cluster mode: the live nodes
        return min(MAX_POOL_SIZE, per_node * (count(spec) if count is not None else 1))

    def _keep_nodes(self) -> None:
        """Cluster mode: a node that a per-node pool has a target on is never idle (the
        runtime releases idle node hosts for Ray's autoscaler to remove their nodes)."""
        keep = getattr(self.runtime, "keep_nodes", None)
        if keep is not None:
            keep([p.spec for p in self._pools.values() if p.per_node])

    def _status(self, pool: WarmPool) -> wire.PoolOut:
        out = pool.status()
        host_of = getattr(self.runtime, "host_of", None)   # cluster mode: where each one is
        if host_of is not None:
            out.nodes = dict(collections.Counter(host_of(i.id) or "?" for i in pool.ready))
        return out

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            try:
                self.follow_nodes()
            except Exception as exc:   # the pools must keep following the nodes
                log.warning("pools: following the nodes failed: %s: %s", type(exc).__name__, exc)

    def _get(self, name: str) -> WarmPool:
        try:
            return self._pools[name]
        except KeyError:
            raise NotFound(f"no pool {name!r}; pools: {', '.join(self._pools) or 'none'}") from None

    async def _refill(self, pool: WarmPool) -> None:
        """Keep `pool` at its size: up to MAX_STARTING starts under way at once (one at a
        time, after a backoff, while starts keep failing)."""
        while True:
            while len(pool.ready) + pool.starting > pool.size:
                if not pool.ready:
                    break
                await self._remove(pool.ready.pop().id)
            cap = 1 if pool.failures else MAX_STARTING
            if len(pool.ready) + pool.starting >= pool.size or pool.starting >= cap:
                pool.wake.clear()
                await pool.wake.wait()
                continue
            if pool.failures:
                await asyncio.sleep(RETRY_BACKOFF_S[min(pool.failures, len(RETRY_BACKOFF_S)) - 1])
            pool.starting += 1
            task = asyncio.ensure_future(self._start_into(pool))
            pool.starts.add(task)
            task.add_done_callback(pool.starts.discard)

    async def _start_into(self, pool: WarmPool) -> None:
        """Start one sandbox for `pool` and put it in when its agent answers."""
        token = f"pool-start:{pool.name}:{time.monotonic_ns()}"
        try:
            if self.admission is not None:
                self.admission.reserve(token, pool.spec.limits)
            info = await _uncancellable(self._start_one(pool.spec),
                                        on_cancel=lambda i: self.runtime.remove(i.id))
            self._release(token)  # the sandbox's own place replaces the start's
            self._hold(info.id, pool.spec)
            pool.ready.append(info)
            pool.last_error = None
            pool.failures = 0
        except Exception as exc:  # keep the pool alive; say why it cannot fill
            pool.last_error = f"{type(exc).__name__}: {exc}"
            pool.failures += 1
            log.warning("pool %s could not start a sandbox: %s", pool.name, pool.last_error)
        finally:
            self._release(token)
            pool.starting -= 1
            pool.wake.set()

    async def _start_one(self, spec: SandboxSpec) -> SandboxInfo:
        """A running sandbox of `spec` whose agent answers, with a spare bash for the first
        command's default session (which would start one then: most of a pooled sandbox's
        first command). Only the making holds one of the manager's start places."""
        async with self._starts:
            info = await asyncio.to_thread(make, self.runtime, spec)
        try:
            ready = ops.session_prestart(cwd=spec.cwd)
            wait_agent = getattr(self.runtime, "wait_agent", None)   # cluster mode: via its host
            if wait_agent is not None:
                await asyncio.to_thread(wait_agent, info.id, AGENT_READY_TIMEOUT_S, ready.name,
                                        ready.args)
            else:
                await _wait_for_agent(self.runtime.agent_socket(info.id), ready)
            return info
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.runtime.remove, info.id))
            raise

    def _drop_later(self, pool: WarmPool) -> None:
        # Tracked with the removals: close() waits for it, so a pool removed just before
        # shutdown does not leave the sandboxes it was still starting or holding.
        task = asyncio.create_task(self._drop(pool))
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _drop(self, pool: WarmPool) -> None:
        tasks = [t for t in [pool.task, *pool.starts] if t is not None]
        for task in tasks:
            task.cancel()
        # A start cancelled mid-way removes what it made (`_uncancellable`) before it ends.
        await asyncio.gather(*tasks, return_exceptions=True)
        while pool.ready:
            await self._remove(pool.ready.pop().id)

    async def _remove(self, sandbox_id: str) -> None:
        await asyncio.shield(self._remove_later(sandbox_id))

    def _remove_later(self, sandbox_id: str) -> asyncio.Future:
        """Start removing a sandbox taken out of a pool; close() waits for it."""
        task = asyncio.ensure_future(self._remove_now(sandbox_id))
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)
        return task

    async def _remove_now(self, sandbox_id: str) -> None:
        """A pooled sandbox has no other owner: a failed removal is retried and said in the
        log, never dropped in silence (that would leave it running for good)."""
        for attempt in range(1, REMOVE_TRIES + 1):
            try:
                await asyncio.to_thread(self.runtime.remove, sandbox_id)
                break
            except NotFound:
                break
            except Exception as exc:
                log.warning("pool: removing sandbox %s failed (try %d of %d): %s: %s", sandbox_id,
                            attempt, REMOVE_TRIES, type(exc).__name__, exc)
                if attempt < REMOVE_TRIES:
                    await asyncio.sleep(RETRY_BACKOFF_S[attempt - 1])
        self._release(f"pool:{sandbox_id}")

    def _hold(self, sandbox_id: str, spec: SandboxSpec) -> None:
        if self.admission is not None:
            self.admission.reserve(f"pool:{sandbox_id}", spec.limits)

    def _release(self, key: str) -> None:
        if self.admission is not None:
            self.admission.release(key)


async def _uncancellable(coro, on_cancel):
    """Await `coro`; if we are cancelled meanwhile, let it finish and undo its result, so a
    sandbox being started when its pool goes away is removed rather than leaked."""
    fut = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        try:
            result = await fut
        except Exception:
            raise asyncio.CancelledError from None
        await asyncio.to_thread(on_cancel, result)
        raise


async def _wait_for_agent(socket_path: str, ready: ops.Op) -> None:
    """Wait until the agent answers `ready` (the handover must find it ready), at most a
    timeout; on the loop, so that many starts can wait at once without a thread each."""
    client = AsyncAgentClient(socket_path)
    try:
        t = time.monotonic()
        await client.call(ready.name, ready.args, timeout=AGENT_READY_TIMEOUT_S)
        log.debug("agent ready after %.1f ms", (time.monotonic() - t) * 1e3)
    finally:
        await client.close()
