"""NodeHost: one machine's sandboxes behind batched, async calls. In a cluster it is a Ray actor,
one per node (`ClusterClient` places it); it runs as a plain object too.

    host = NodeHost(host_id_for(socket.gethostname(), "default"))
    ids = await host.create([SandboxSpec(image="debian")] * 8)
    results = await host.run([(sid, "echo hi") for sid in ids], timeout=30)
    await host.remove(ids)

Every batch call takes a list and answers a list in the same order; an item that failed holds
its `TumblerError` (returned, not raised), so one broken sandbox never costs the rest of the
batch. Outputs and exit codes are the agent's, byte for byte. A sandbox's default bash session
is the agent's (made by the first command and again after `exit`, in the same round trip), so
`run` is one agent round trip. The host is built on `tumbler.sandboxhost.SandboxHost`, as the
server's `SandboxService` is: one owner of making a sandbox, its agent connection (one per
sandbox, calls multiplexed on it), the calls and what a hang-up means; only the runtime's
blocking steps (runc, mounts) go to its small thread pool.

Each sandbox carries `HOST_LABEL` = the host's id: the machine's hostname and a configured name,
never Ray's node id, which is new at every start. The host also keeps a ledger of the ids it
holds (`<TUMBLER_HOME>/nodehosts/<host id>/<sandbox id>`, an empty file each, written before
the sandbox is made and deleted after it is removed). A host that starts reclaims (removes)
every sandbox with its label or in its ledger: what its predecessor on this machine left when
it died, down to the directory of a create or remove it was killed in.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from pydantic import BaseModel, Field

from tumbler import memstats, ops
from tumbler.cluster import images
from tumbler.cluster.agentrelay import AgentRelay
from tumbler.config import Paths
from tumbler.errors import Conflict, InvalidRequest, NotFound, RuntimeFailure, TumblerError
from tumbler.models import CommandResult, ExecResult
from tumbler.runtime import overlay
from tumbler.runtime.process import ProcessRuntime
from tumbler.runtime.spec import SandboxInfo, SandboxSpec, SandboxState, transition
from tumbler.runtime.trees import remove_tree
from tumbler.sandboxhost import SandboxHost

log = logging.getLogger(__name__)

HOST_LABEL = "tumbler.node-host"
# What the server's cluster mode may ask of a node's runtime (NodeHost.runtime_calls).
RUNTIME_METHODS = frozenset({"create", "start", "stop", "remove", "reset", "pause", "resume",
                             "get", "list", "stats", "snapshot", "fork"})
DEFAULT_TIMEOUT_S = 300.0
ID_BYTES = 6                # a sandbox id is 12 hex digits, as the runtime's own

T = TypeVar("T")


def host_id_for(hostname: str, name: str) -> str:
    """The stable id of the node host called `name` on machine `hostname`."""
    return f"{hostname}/{name}"


class HostInfo(BaseModel):
    """What a node host reports about itself."""

    host_id: str
    pid: int = Field(description="the host's process id on its machine")
    sandboxes: int = Field(description="sandboxes it holds now")
    reclaimed: int = Field(description="sandboxes of a dead predecessor (same host id) it "
                           "removed when it started")
    reclaim_failed: list[str] = Field(default_factory=list, description=(
        "predecessor's sandboxes it could not remove, with the reason (tried again at the next start)"))
    node_id: str | None = Field(default=None, description="the Ray node it runs on (None outside Ray)")
    adopted: bool = Field(default=False, description=(
        "taken over by a server that (re)started, its sandboxes kept (NodeHost.adopt)"))
    agents: str | None = Field(default=None, description=(
        "HOST:PORT of its agent relay (cluster/agentrelay.py), where the server's cluster mode "
        "reaches its sandboxes' agents; None if it has none"))
    agents_token: str | None = Field(default=None, exclude=True, repr=False, description=(
        "the relay's secret (sent over Ray to the server; never dumped)"))


@dataclass
class _Held:
    """A sandbox this host made: the spec it was made to and its state in the life cycle's
    table (running; stopped once its init died, until a reset). Its agent connection is the
    SandboxHost's."""

    spec: SandboxSpec
    state: SandboxState = SandboxState.RUNNING


class NodeHost:
    """The sandboxes of one machine, made and used in batches. Methods are coroutines, all to
    be awaited on one event loop (the agent connections belong to the loop that opened them),
    as they are in its Ray actor."""

    def __init__(self, host_id: str, *, home: str | None = None, run: str | None = None,
                 start_concurrency: int = 4, owner: str | None = None, backend: str = "process",
                 engine: str | None = None):
        self.host_id = host_id
        self.owner = owner    # the server it serves (its registry); another may not adopt it
        self._in_flight: set[asyncio.Task] = set()   # runtime_calls batches under way
        memstats.tune()   # a host lives for days: big freed blocks go back to the kernel
        env = Paths.from_env()
        paths = Paths(home=Path(home) if home else env.home, run=Path(run) if run else env.run)
        if backend == "docker":   # the node's engine; its images are the engine's own
            from tumbler.runtime.docker import DockerRuntime
            self.runtime = DockerRuntime(engine, paths=paths)
        else:
            self.runtime = ProcessRuntime(paths)
        self.host = SandboxHost(self.runtime, threads=start_concurrency, fix=_fix,
                                check_alive=self._check_alive, thread_name="nodehost")
        self._held: dict[str, _Held] = {}
        self._relay = AgentRelay(self._agent_socket_of)   # the server's way to the agents
        self._relay_at: str | None = None
        # The ids of the sandboxes it holds, one empty file each: what a successor must remove
        # even where a create or remove was cut short before the record was written or after
        # it was deleted.
        self._ledger = self.runtime.paths.home / "nodehosts" / re.sub(r"[^A-Za-z0-9._-]", "_", host_id)
        self._ledger.mkdir(parents=True, exist_ok=True)
        self.reclaimed, self.reclaim_failed = self._reclaim()
        if isinstance(self.runtime, ProcessRuntime):   # image copies a dead host was receiving
            images.sweep_received(self.runtime.images)

    # -- batches -----------------------------------------------------------------------------

    async def info(self) -> HostInfo:
        return HostInfo(host_id=self.host_id, pid=os.getpid(), sandboxes=len(self._held),
                        reclaimed=self.reclaimed, reclaim_failed=self.reclaim_failed,
                        node_id=_ray_node_id(), agents=await self._relay_address(),
                        agents_token=self._relay.token)

    async def adopt(self, owner: str | None, drain_s: float) -> HostInfo:
        """A server that restarted takes this host over, sandboxes and all (a detached actor
        outlives its driver). Refused (Conflict) to a server other than the one it serves.
        The runtime calls its predecessor left under way (a create the dead server was waiting
        for) are let finish first, up to `drain_s`, so the listing that follows has them."""
        if self.owner is not None and owner != self.owner:
            raise Conflict(f"node host {self.host_id} serves the server of {self.owner!r}, not "
                           f"{owner!r}: give each server its own Ray namespace")
        self.owner = owner
        if self._in_flight:
            await asyncio.wait(list(self._in_flight), timeout=drain_s)
        return (await self.info()).model_copy(update={"adopted": True})

    async def create(self, specs: list[SandboxSpec]) -> list[str | TumblerError]:
        """Make and start one sandbox per spec -> their ids."""
        return await _each(specs, self._create_one)

    async def run(self, commands: list[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT_S
                  ) -> list[CommandResult | TumblerError]:
        """Run each (sandbox id, command) in that sandbox's default bash session, all at once.
        `timeout` (seconds) bounds each command; one past it is interrupted (timed_out)."""
        return await _each(commands, lambda item: self._run_one(*item, timeout))

    async def exec(self, commands: list[tuple[str, list[str] | str]],
                   timeout: float = DEFAULT_TIMEOUT_S) -> list[ExecResult | TumblerError]:
        """Run each (sandbox id, argv list or /bin/sh string) as one process and wait for it."""
        return await _each(commands, lambda item: self._exec_one(*item, timeout))

    async def call(self, items: list[tuple[str, tuple[str, dict, bytes, float]]]
                   ) -> list[tuple[dict, bytes] | TumblerError]:
        """Each (sandbox id, (op, args, body, timeout)) sent to that sandbox's agent as it is,
        all at once (the sandbox handle's Ray transport; `tumbler.ops` builds the ops)."""
        async def one(item):
            sandbox_id, (op, args, body, timeout) = item
            return await self._call(sandbox_id, op, args, body, timeout=timeout)
        return await _each(items, one)

    async def call_stream(self, sandbox_id: str, op: str, args: dict, body: bytes, timeout: float):
        """One agent call whose events (a streamed command's output) are relayed as they come:
        yields ("events", [(header, chunk), ...]) with what arrived since the last yield, then
        ("reply", (header, body)) or ("error", TumblerError). A Ray streaming generator in a
        cluster: the server's cluster mode relays streamed output through it."""
        events: asyncio.Queue = asyncio.Queue()
        call = asyncio.ensure_future(self._call(
            sandbox_id, op, args, body, timeout=timeout,
            on_event=lambda header, chunk: events.put_nowait((header, chunk))))
        try:
            while not call.done() or not events.empty():
                get = asyncio.ensure_future(events.get())
                await asyncio.wait({get, call}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    get.cancel()
                    continue
                batch = [get.result()]
                while not events.empty():
                    batch.append(events.get_nowait())
                yield ("events", batch)
            try:
                answer = ("reply", call.result())
            except TumblerError as exc:
                answer = ("error", exc)
            yield answer
        finally:
            call.cancel()   # the caller went away (or it is done: a no-op)

    # -- images (cluster/images.py: copies from the server's store, by digest) ---------------

    async def image_digests(self, names: list[str]) -> dict[str, str | None]:
        """Each image name -> its layer's digest in this node's store (None: not here)."""
        return await self._blocking(images.digests, self.runtime.images, names)

    async def image_begin(self, size: int) -> str:
        """Make room for a layer tar of `size` bytes -> the transfer's id (its file's path)."""
        free = images.free_bytes(self.runtime.images)
        if free < 2 * size:   # the tar, then its files
            raise RuntimeFailure(f"node host {self.host_id} has {free >> 20} MiB free in "
                                 f"{self.runtime.images.root}; the image needs {2 * size >> 20} "
                                 "MiB (its tar, then its files)")
        path = images.receiving(self.runtime.images)
        path.touch()
        return str(path)

    async def image_part(self, transfer: str, offset: int, data: bytes) -> None:
        def write() -> None:
            fd = os.open(self._receiving(transfer), os.O_WRONLY)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)
        await self._blocking(write)

    async def image_finish(self, transfer: str, name: str, parent: str | None, digest: str,
                           source: str) -> None:
        """Check the received tar's sha256 against `digest` and unpack it as image `name`."""
        path = self._receiving(transfer)
        try:
            await self._blocking(images.unpack, self.runtime.images, name, parent, path, digest,
                                 source)
        finally:
            path.unlink(missing_ok=True)

    async def runtime_calls(self, items: list[tuple[str | None, tuple[str, tuple]]]) -> list:
        """Each (sandbox id or None, (method, args)) of this machine's runtime
        (`RUNTIME_METHODS`), all at once: the server's cluster mode drives a node's sandboxes
        through these (the server keeps the life cycle and the records; the host keeps the
        ledger and the agent connections)."""
        task = asyncio.current_task()
        self._in_flight.add(task)
        try:
            return await _each(items, lambda item: self._runtime_one(*item[1]))
        finally:
            self._in_flight.discard(task)

    async def reset(self, ids: list[str]) -> list[None | TumblerError]:
        """Put each sandbox back to its pristine image (its next command gets a fresh default
        session)."""
        return await _each(ids, self._reset_one)

    async def remove(self, ids: list[str]) -> list[None | TumblerError]:
        results = await _each(ids, self._remove_one)
        memstats.trim()   # a host lives for days: give back what glibc keeps of freed memory
        return results

    async def close(self) -> int:
        """Remove every sandbox this host holds -> how many. An empty ledger goes too."""
        ids = list(self._held)
        self._relay.close()
        await self.remove(ids)
        await self.host.close()
        try:
            self._ledger.rmdir()
        except OSError:     # something is left to reclaim
            pass
        return len(ids)

    # -- one item ----------------------------------------------------------------------------

    async def _create_one(self, spec: SandboxSpec) -> str:
        spec = spec.model_copy(update={"labels": {**spec.labels, HOST_LABEL: self.host_id}})
        info = await self._blocking(self._make, spec)
        self._held[info.id] = _Held(spec)
        return info.id

    async def _run_one(self, sandbox_id: str, command: str, timeout: float) -> CommandResult:
        return await self._do(sandbox_id, ops.run(command, timeout=timeout,
                                                   cwd=self._get(sandbox_id).spec.cwd))

    async def _exec_one(self, sandbox_id: str, command: list[str] | str, timeout: float) -> ExecResult:
        return await self._do(sandbox_id, ops.exec_(command, cwd=self._get(sandbox_id).spec.cwd,
                                                    timeout=timeout))

    async def _reset_one(self, sandbox_id: str) -> None:
        held = self._get(sandbox_id)
        target = transition(sandbox_id, held.state, "reset")
        await self.host.drop_agent(sandbox_id)   # a new init answers on a new connection
        await self._blocking(self.runtime.reset, sandbox_id)
        held.state = target

    async def _remove_one(self, sandbox_id: str) -> None:
        held = self._get(sandbox_id)
        transition(sandbox_id, held.state, "remove")
        await self.host.drop_agent(sandbox_id)
        await self._blocking(self._remove_now, sandbox_id)
        self._held.pop(sandbox_id, None)

    async def _runtime_one(self, method: str, args: tuple):
        if method not in RUNTIME_METHODS:
            raise InvalidRequest(f"node host {self.host_id}: no runtime method {method!r}")
        if method == "list":   # this host's sandboxes only (several hosts may share a machine)
            infos = await self._blocking(self.runtime.list)
            return [i for i in infos if i.spec.labels.get(HOST_LABEL) == self.host_id]
        if method == "fork":   # children on this node, in the ledger before they are made
            children = args[1]
            for child in children:
                self._note(child)
            try:
                infos = await self._blocking(self.runtime.fork, *args)
            except BaseException:
                for child in children:
                    self._forget(child)
                raise
            for info in infos:
                self._held[info.id] = _Held(info.spec, info.state)
            return infos
        if method == "create":
            spec, sandbox_id = args
            spec = spec.model_copy(update={"labels": {**spec.labels, HOST_LABEL: self.host_id}})
            self._note(sandbox_id)
            try:
                info = await self._blocking(self.runtime.create, spec, sandbox_id)
            except BaseException:
                self._forget(sandbox_id)
                raise
            self._held[sandbox_id] = _Held(spec, info.state)
            return info
        sandbox_id = args[0]
        held = self._held.get(sandbox_id)
        if method in ("remove", "stop", "reset", "start"):
            await self.host.drop_agent(sandbox_id)   # a new init answers on a new connection
        if method == "remove":
            await self._blocking(self._remove_now, sandbox_id)
            self._held.pop(sandbox_id, None)
            return None
        result = await self._blocking(getattr(self.runtime, method), *args)
        if held is not None and isinstance(result, SandboxInfo):
            held.state = result.state
        return result

    # -- plumbing ----------------------------------------------------------------------------

    def _make(self, spec: SandboxSpec) -> SandboxInfo:
        sandbox_id = secrets.token_hex(ID_BYTES)
        self._note(sandbox_id)
        try:
            return self.host.make(spec, sandbox_id)   # a failure removes what it made
        except BaseException:
            self._forget(sandbox_id)
            raise

    def _remove_now(self, sandbox_id: str) -> None:
        self.runtime.remove(sandbox_id)
        self._forget(sandbox_id)

    def _note(self, sandbox_id: str) -> None:
        self._ledger.mkdir(parents=True, exist_ok=True)
        (self._ledger / sandbox_id).touch()

    def _forget(self, sandbox_id: str) -> None:
        (self._ledger / sandbox_id).unlink(missing_ok=True)

    def _reclaim(self) -> tuple[int, list[str]]:
        """Remove what a dead predecessor with this host id left on this machine: every
        sandbox with its label, and every one in its ledger (a create or remove cut short can
        leave a directory without a record, which no label names) -> (removed, failures)."""
        labelled = {i.id for i in self.runtime.list() if i.spec.labels.get(HOST_LABEL) == self.host_id}
        left = sorted(labelled | {p.name for p in self._ledger.iterdir()})
        removed, failed = 0, []
        for sandbox_id, outcome in zip(left, self.host.executor.map(self._reclaim_one, left)):
            if isinstance(outcome, str):
                failed.append(f"{sandbox_id}: {outcome}")
            else:
                removed += outcome
        if left:
            log.warning("node host %s reclaimed %d sandboxes of its predecessor (%d failed)",
                        self.host_id, removed, len(failed))
        return removed, failed

    def _reclaim_one(self, sandbox_id: str) -> bool | str:
        """Remove one left-behind sandbox -> whether anything of it was there, or why not."""
        sdir = self.runtime.paths.sandboxes / sandbox_id
        try:
            self.runtime.remove(sandbox_id)
        except NotFound:       # no record: a create or remove of ours was cut short
            if overlay.is_mounted(sdir / "rootfs") or overlay.is_mounted(sdir / "layer"):
                return "its directory has no record but holds mounts"
            found = sdir.exists()
            remove_tree(sdir)
            self._forget(sandbox_id)
            return found
        except TumblerError as exc:
            return exc.message
        self._forget(sandbox_id)
        return True

    async def _relay_address(self) -> str | None:
        """Where the relay listens, started at the first ask (it needs the host's loop)."""
        if self._relay_at is None:
            try:
                self._relay_at = await self._relay.start(_node_address())
            except OSError as exc:   # the server then calls the agents through Ray
                log.warning("node host %s: no agent relay: %s", self.host_id, exc)
        return self._relay_at

    def _agent_socket_of(self, sandbox_id: str) -> str | None:
        """The agent socket of a sandbox this host runs; None for any other id."""
        held = self._held.get(sandbox_id)
        if held is None or held.state is not SandboxState.RUNNING:
            return None
        return self.runtime.agent_socket(sandbox_id)

    def _receiving(self, transfer: str) -> Path:
        path = Path(transfer)
        if path.parent != self.runtime.images.root or not path.name.startswith(images.RECEIVING):
            raise InvalidRequest(f"node host {self.host_id}: no image transfer {transfer!r}")
        return path

    def _get(self, sandbox_id: str) -> _Held:
        try:
            return self._held[sandbox_id]
        except KeyError:
            raise NotFound(f"no sandbox {sandbox_id} on node host {self.host_id}") from None

    async def _call(self, sandbox_id: str, op: str, args: dict, body: bytes = b"", *,
                    timeout: float, on_event=None) -> tuple[dict, bytes]:
        held = self._get(sandbox_id)
        if held.state is not SandboxState.RUNNING:
            raise self.host.agent_died(sandbox_id, "its init had died")
        return await self.host.call(sandbox_id, op, args, body, timeout=timeout, on_event=on_event)

    async def _check_alive(self, sandbox_id: str) -> bool | None:
        """SandboxHost's death watch, after the agent hung up: if the sandbox's init is gone it
        died (stopped, by the table, until a reset) -> True; False if it lives; None if it is
        not running."""
        held = self._held.get(sandbox_id)
        if held is None or held.state is not SandboxState.RUNNING:
            return None
        if self.host.init_alive(sandbox_id):
            return False
        held.state = transition(sandbox_id, held.state, "die")
        await self.host.drop_agent(sandbox_id)
        return True

    async def _do(self, sandbox_id: str, op: ops.Op):
        return op.parse(*await self._call(sandbox_id, op.name, op.args, op.body, timeout=op.timeout))

    async def _blocking(self, fn: Callable[..., T], *args) -> T:
        return await self.host.blocking(fn, *args)


def _fix(sandbox_id: str) -> str:
    return "reset it (ClusterClient.reset) or remove it"


def _ray():
    """Ray, when this process is a Ray worker or driver; None (a NodeHost runs without Ray too).
    Looked up, not imported: a host outside Ray never loads it."""
    import sys
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def _node_address() -> str:
    """The address other machines reach this one at: Ray's for its node, loopback outside Ray."""
    ray = _ray()
    return "127.0.0.1" if ray is None else ray.util.get_node_ip_address()


def _ray_node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    ray = _ray()
    return None if ray is None else ray.get_runtime_context().get_node_id()


async def _each(items: list, fn: Callable[..., Awaitable]) -> list:
    """fn(item) for every item at once; a TumblerError takes its item's place in the answer."""
    async def one(item):
        try:
            return await fn(item)
        except TumblerError as exc:
            return exc
    return list(await asyncio.gather(*(one(item) for item in items)))


