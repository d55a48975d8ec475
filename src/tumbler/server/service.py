"""SandboxService: the one place routes go through — life cycle, admission, agent calls.

Sandboxes live in the runtime (runc containers whose state is on disk) and are recorded in the
registry; this class keeps both in step. It is built on `tumbler.sandboxhost.SandboxHost`, the
host side's one owner of making a sandbox, its agent connection, the calls to it and what a
hang-up means (a cluster's `NodeHost` is built on the same): what this class adds is the
registry, admission, the records' life cycle and restart reconciliation. Runtime calls block
(they run runc), so they run in the host's worker threads; agent calls are async. A warm pool
plugs in as a `SandboxSource`; ROCK routes call these same methods.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import AsyncIterator, Callable, Protocol, TypeVar

from tumbler.errors import Conflict, InvalidRequest, NotFound, TumblerError
from tumbler.models import CommandResult, ExecResult, FileInfo, ProcessInfo
from tumbler.runtime.base import Runtime
from tumbler.runtime.liveness import reap_zombies_of
from tumbler.runtime.spec import (HOLDING, SandboxInfo, SandboxSpec, SandboxState,
                                  SandboxStats, transition)
from tumbler.server.capacity import Admission, Budget
from tumbler.server.config import ServerConfig
from tumbler.server.history import OUTPUT_TAIL, SessionHistory
from tumbler.server.registry import Registry, SandboxRecord
from tumbler.server.writes import CoalescedWrites
from tumbler.sandboxhost import OP_TIMEOUT_S, SandboxHost
from tumbler import ops, wire
from tumbler.ops import DEFAULT_SESSION  # noqa: F401 (the routes' name for it)

log = logging.getLogger(__name__)

T = TypeVar("T")
READ_CHUNK = 4 << 20         # bytes of a file asked of the agent at once when streaming it out
MAX_STREAM = 1 << 40         # bytes of one streamed file read without a length
RUNTIME_THREADS = 16         # runc calls in flight at once (creates of a burst overlap)
# Cold creates under way at once. A burst beyond this waits its turn in arrival order (the
# semaphore is FIFO): each create then runs its steps (record, runc, record) back to back and
# answers as soon as its sandbox is made, instead of every step of every create queueing in
# the worker threads and the whole burst answering at its end. Two per core keeps the cores
# busy while one create waits on runc or the disk.
COLD_STARTS = max(2, 2 * (os.cpu_count() or 1))
DIED = ("its agent (the sandbox's init) died while the server ran: its processes exited or were "
        "killed; start or reset it")
FOUND_STOPPED = ("found stopped at server start: its processes had exited (host reboot or "
                 "killed); start or reset it")
GONE = ("its container is gone from the runtime (removed outside the server, or the host's "
        "state was wiped); remove this record with `tumbler sandbox rm ID` (DELETE)")
OnOutput = Callable[[bytes], None]


class SandboxSource(Protocol):
    """Where `create` may get a ready sandbox from before making one cold (a warm pool)."""

    async def take(self, spec: SandboxSpec) -> SandboxInfo | None:
        """A running sandbox made to `spec`, now owned by the caller; None if there is none."""


class SandboxService:
    """Everything the REST API does, as async methods that raise tumbler.errors."""

    def __init__(self, config: ServerConfig, runtime: Runtime, registry: Registry,
                 source: SandboxSource | None = None):
        self.config = config
        self.runtime = runtime
        self.registry = registry
        self.source = source
        self.admission = Admission(Budget(config.node_memory_bytes, config.node_pids, config.node_cpus))
        self._records: dict[str, SandboxRecord] = {}
        # The sandboxes' making, agent connections and calls (and the worker threads).
        self.host = SandboxHost(runtime, threads=RUNTIME_THREADS, fix=_fix,
                                check_alive=self.check_alive)
        self._busy: dict[str, int] = {}          # requests in flight per sandbox
        self._dirty_active: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one life-cycle change at a time per sandbox
        self.history = SessionHistory()   # recent commands per session, for viewers
        self._writes = CoalescedWrites(registry, self.blocking)   # a burst's records, batched
        # In cluster mode the cold starts happen on the nodes: the runtime says how many at once.
        self._cold_starts = asyncio.Semaphore(
            config.cold_starts or getattr(runtime, "cold_starts", None) or COLD_STARTS)

    # -- start and stop of the service -------------------------------------------------------

    async def open(self) -> None:
        """Load the registry and reconcile it with the runtime (after a restart or crash)."""
        records = await self.blocking(self.registry.list)
        for record in records:
            record = await self.blocking(self._reconcile, record)
            self._records[record.id] = record
            if record.state in HOLDING:
                self.admission.reserve(record.id, record.spec.limits)
        log.info("registry holds %d sandboxes", len(self._records))

    async def close(self, keep_sandboxes: bool) -> None:
        """Flush state; remove every sandbox we own unless `keep_sandboxes`."""
        await self.flush_activity()
        if not keep_sandboxes:
            await asyncio.gather(*(self._remove_quietly(sid) for sid in list(self._records)))
        await self.host.close()
        await asyncio.to_thread(self.registry.close)

    def _reconcile(self, record: SandboxRecord) -> SandboxRecord:
        if record.state is SandboxState.ARCHIVED:   # in an archive, not in the runtime, by design
            return record
        try:
            info = self.runtime.get(record.id)
        except NotFound:
            if record.state is not SandboxState.ERROR:
                self._move(record, "lose", GONE)
            return record
        if info.state is SandboxState.RUNNING and not self._init_alive(record.id):
            self.runtime.stop(record.id)
            record.state = info.state   # the runtime's word, then what the look found
            self._move(record, "die", FOUND_STOPPED)
        elif info.state is not record.state and record.state is not SandboxState.ERROR:
            record.state = info.state
            self.registry.set_state(record.id, record.state)
        return record

    def _move(self, record: SandboxRecord, op: str, error: str | None = None) -> SandboxRecord:
        """Move `record` by `op` of the life cycle's table (Conflict if it may not), note
        why (`error`, None for a change the caller asked for) and write it to the registry."""
        record.state, record.error = transition(record.id, record.state, op), error
        self.registry.set_state(record.id, record.state, error)
        return record

    def _init_alive(self, sandbox_id: str) -> bool:
        return self.host.init_alive(sandbox_id)

    # -- the death watch -----------------------------------------------------------------------

    async def sweep_dead(self) -> list[str]:
        """Stop every running sandbox whose init died (the reaper's pass); returns their ids.

        Each sandbox on its own: one that cannot be checked is logged and the pass goes on."""
        dead = []
        for sid in [r.id for r in self.list(SandboxState.RUNNING)]:
            try:
                if await self.check_alive(sid):
                    dead.append(sid)
            except Exception as exc:  # one bad sandbox must not stop the pass for the others
                log.warning("sandbox %s: could not check its agent: %s", sid,
                            getattr(exc, "message", None) or repr(exc))
        lost = getattr(self.runtime, "lost_sandboxes", None)   # cluster mode: on dead nodes
        if lost is not None:
            dead += await self._mark_lost(await self.blocking(lost))
        return dead

    async def _mark_lost(self, lost: dict[str, str]) -> list[str]:
        """Each sandbox whose node was lost -> state error, `error` naming the node and why."""
        marked = []
        for sid, why in lost.items():
            record = self._records.get(sid)
            if record is None or record.state in (SandboxState.ERROR, SandboxState.ARCHIVED):
                continue
            async with self._lock(sid):
                await self._drop_agent(sid)
                self.admission.release(sid)
                await self.blocking(self._move, record, "lose", why)
                log.warning("sandbox %s: %s", sid, why)
                marked.append(sid)
        return marked

    async def check_alive(self, sandbox_id: str) -> bool | None:
        """If the running sandbox's init died, stop it (state `stopped`, `error` says why, as a
        restart's reconcile does) and return True; False if it lives or a life-cycle change is
        in flight (look again), None if it is not running (nothing to look at)."""
        record = self._records.get(sandbox_id)
        lock = self._lock(sandbox_id)
        if record is None or record.state is not SandboxState.RUNNING:
            return None
        if lock.locked() or self._init_alive(sandbox_id):
            return False  # a life-cycle change in flight decides its state itself
        async with lock:
            if self._records.get(sandbox_id) is not record or record.state is not SandboxState.RUNNING:
                return None
            log.warning("sandbox %s: its agent died; marking it stopped", sandbox_id)
            await self._drop_agent(sandbox_id)
            op, why = "die", DIED
            try:
                await self.blocking(self.runtime.stop, sandbox_id)
            except NotFound:  # removed behind the server's back (`tumbler local rm`)
                op, why = "lose", GONE
                await self.blocking(reap_zombies_of, sandbox_id)
                log.warning("sandbox %s: its container is gone from the runtime; marking it "
                            "error", sandbox_id)
            self.admission.release(sandbox_id)
            await self.blocking(self._move, record, op, why)
        return True

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    # -- life cycle ----------------------------------------------------------------------------

    async def create(self, req: wire.CreateSandboxRequest) -> SandboxRecord:
        spec = req.spec()
        # A pooled sandbox first: taking it frees its place in the budget, which the
        # placeholder below then takes (no await in between, so no one else can).
        info = await self.source.take(spec) if self.source is not None else None
        placeholder = f"pending-{id(req)}-{time.monotonic_ns()}"
        try:
            self.admission.reserve(placeholder, spec.limits)
        except BaseException:
            if info is not None:
                await self.blocking(self.runtime.remove, info.id)
            raise
        now = time.time()
        ttl = req.ttl_s or self.config.default_ttl_s
        lifetime = req.max_lifetime_s or self.config.default_max_lifetime_s

        def record_of(sandbox_id: str, state: SandboxState, runtime: str) -> SandboxRecord:
            return SandboxRecord(id=sandbox_id, spec=spec, state=state, created=now,
                                 last_active=now, ttl_s=ttl,
                                 expires_at=now + lifetime if lifetime else None, runtime=runtime)

        recorded = False
        try:
            if info is None:
                async with self._cold_starts:
                    # Recorded before the runtime makes it: a server killed mid-create leaves a
                    # record (reconciled at its next start, removable), never a sandbox no one
                    # knows.
                    sandbox_id = secrets.token_hex(6)
                    await self._writes.add(record_of(
                        sandbox_id, SandboxState.CREATED, getattr(self.runtime, "name", "process")))
                    recorded = True
                    try:
                        info = await self.blocking(self.host.make, spec, sandbox_id)
                    except BaseException:
                        await self.blocking(self.registry.delete, sandbox_id)
                        raise
        finally:
            self.admission.release(placeholder)
        self.admission.reserve(info.id, spec.limits)  # cannot fail: the placeholder held its place
        record = record_of(info.id, info.state, info.runtime)
        try:
            if recorded:
                await self._writes.set_state(record.id, record.state)
            else:
                await self._writes.add(record)
        except Exception:
            await self.blocking(self.runtime.remove, info.id)
            self.admission.release(info.id)
            raise
        self._records[info.id] = record
        return record

    def ids(self) -> list[str]:
        """Ids of every sandbox the service has a record of."""
        return list(self._records)

    def get(self, sandbox_id: str) -> SandboxRecord:
        record = self._records.get(sandbox_id)
        if record is None:
            raise NotFound(f"no sandbox {sandbox_id!r}")
        if sandbox_id in self._dirty_active:
            record.last_active = self._dirty_active[sandbox_id]
        return record

    def list(self, state: SandboxState | None = None, labels: dict[str, str] | None = None) -> list[SandboxRecord]:
        out = []
        for sid in list(self._records):
            record = self.get(sid)
            if state is not None and record.state != state:
                continue
            if labels and any(record.labels.get(k) != v for k, v in labels.items()):
                continue
            out.append(record)
        return out

    async def stop(self, sandbox_id: str) -> SandboxRecord:
        record = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            transition(sandbox_id, record.state, "stop")
            await self._drop_agent(sandbox_id)
            await self.blocking(self.runtime.stop, sandbox_id)
            self.history.drop(sandbox_id)
            self.admission.release(sandbox_id)
            return await self.blocking(self._move, record, "stop")

    async def start(self, sandbox_id: str) -> SandboxRecord:
        record = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            transition(sandbox_id, record.state, "start")
            self.admission.reserve(sandbox_id, record.spec.limits)
            try:
                await self.blocking(self.runtime.start, sandbox_id)
            except BaseException:
                self.admission.release(sandbox_id)
                raise
            return await self.blocking(self._move, record, "start")

    async def reset(self, sandbox_id: str) -> SandboxRecord:
        record = self.get(sandbox_id)
        async with self._lock(sandbox_id):
            transition(sandbox_id, record.state, "reset")
            self.admission.reserve(sandbox_id, record.spec.limits)
            await self._drop_agent(sandbox_id)
            await self.blocking(self.runtime.reset, sandbox_id)
            self.history.drop(sandbox_id)
            return await self.blocking(self._move, record, "reset")

    async def snapshot(self, sandbox_id: str, image: str) -> str:
        self.get(sandbox_id)
        return await self.blocking(self.runtime.snapshot, sandbox_id, image)

    async def stats(self, sandbox_id: str) -> SandboxStats:
        self.get(sandbox_id)
        return await self.blocking(self.runtime.stats, sandbox_id)

    async def remove(self, sandbox_id: str) -> None:
        record = self.get(sandbox_id)
        # Out of the table first: requests that arrive while runc tears it down get a plain
        # 404, not a half-removed sandbox.
        self._records.pop(sandbox_id, None)
        try:
            async with self._lock(sandbox_id):
                await self._drop_agent(sandbox_id)
                await self.blocking(self.runtime.remove, sandbox_id)
        except NotFound:
            pass  # its container was gone already (state error): drop the record all the same
        except BaseException as exc:
            if not (isinstance(exc, Conflict) and record.state is SandboxState.ERROR):
                self._records[sandbox_id] = record
                raise
        self.admission.release(sandbox_id)
        self._dirty_active.pop(sandbox_id, None)
        self._busy.pop(sandbox_id, None)
        self._locks.pop(sandbox_id, None)
        self.history.drop(sandbox_id)
        await self.blocking(self.registry.delete, sandbox_id)

    async def _remove_quietly(self, sandbox_id: str) -> None:
        try:
            await self.remove(sandbox_id)
        except TumblerError as exc:
            log.warning("could not remove sandbox %s: %s", sandbox_id, exc.message)

    # -- activity (for the reaper) --------------------------------------------------------------

    def busy(self, sandbox_id: str) -> bool:
        return self._busy.get(sandbox_id, 0) > 0

    async def flush_activity(self) -> None:
        dirty, self._dirty_active = self._dirty_active, {}
        for sid, t in dirty.items():
            if sid in self._records:
                self._records[sid].last_active = t
        await self.blocking(self.registry.touch_many, dirty)

    # -- agent calls ---------------------------------------------------------------------------

    async def call(self, sandbox_id: str, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = OP_TIMEOUT_S, on_event=None,
                   touch: bool = True) -> tuple[dict, bytes]:
        """One request to the sandbox's agent, its failures turned into tumbler.errors.
        `touch=False`: a look that is not use (a viewer's poll) leaves the idle TTL running."""
        self._asked(self._running(sandbox_id), touch)
        try:
            return await self.host.call(sandbox_id, op, args, body, timeout=timeout,
                                        on_event=on_event)
        finally:
            self._answered(sandbox_id, touch)

    def _running(self, sandbox_id: str) -> SandboxRecord:
        """The sandbox's record; an error if it does not run (what a call to it raises)."""
        record = self.get(sandbox_id)
        if record.state is not SandboxState.RUNNING:
            raise self._not_running(record)
        return record

    def _asked(self, record: SandboxRecord, touch: bool = True) -> None:
        """A call to the sandbox is under way (until _answered): not idle."""
        self._busy[record.id] = self._busy.get(record.id, 0) + 1
        if touch:
            self._dirty_active[record.id] = time.time()

    def _answered(self, sandbox_id: str, touch: bool = True) -> None:
        busy = self._busy.get(sandbox_id)
        if busy:   # none: the sandbox was removed while the call ran
            self._busy[sandbox_id] = busy - 1
        if touch:
            self._dirty_active[sandbox_id] = time.time()

    def _not_running(self, record: SandboxRecord) -> TumblerError:
        # A sandbox stopped because its init died (`error` says so) answers as a call to it
        # would have before the death watch saw it; any other state is the caller's to change.
        if record.state is SandboxState.STOPPED and record.error:
            return self.host.agent_died(record.id, "it was stopped")
        return Conflict(f"sandbox {record.id} is {record.state.value}; start it first"
                        + (f" ({record.error})" if record.error else ""))

    async def _drop_agent(self, sandbox_id: str) -> None:
        await self.host.drop_agent(sandbox_id)

    # -- sessions ------------------------------------------------------------------------------

    async def do(self, sandbox_id: str, op: ops.Op, on_event=None, touch: bool = True):
        """Send one op of `tumbler.ops` to the sandbox's agent and parse its reply."""
        return op.parse(*await self.call(sandbox_id, op.name, op.args, op.body,
                                         timeout=op.timeout, on_event=on_event, touch=touch))

    async def create_session(self, sandbox_id: str, name: str, env: dict[str, str],
                             cwd: str | None) -> None:
        await self.do(sandbox_id, ops.session_create(name, env, cwd or self.get(sandbox_id).spec.cwd))

    async def list_sessions(self, sandbox_id: str, touch: bool = True) -> list[dict]:
        return await self.do(sandbox_id, ops.sessions(), touch=touch)

    async def run(self, sandbox_id: str, session: str | None, command: str, *,
                  timeout: float = wire.DEFAULT_TIMEOUT_S, max_output: int | None = None,
                  on_output: OnOutput | None = None) -> CommandResult:
        """Run `command` in `session` (None: the default session, which the agent makes on the
        first command and again after `exit`, in the same round trip)."""
        op = _run_op(self.get(sandbox_id), session, command, timeout, max_output,
                     stream=on_output is not None)
        streamed = bytearray()   # a streamed run's reply carries no output: keep its tail here

        def on_event(_h, chunk: bytes) -> None:
            on_output(chunk)
            streamed.extend(chunk)
            del streamed[:-OUTPUT_TAIL]
        started = time.time()
        result = await self.do(sandbox_id, op, on_event if on_output else None)
        self.history.record(sandbox_id, session or DEFAULT_SESSION, command, result, started,
                            bytes(streamed) if on_output else result.output_bytes)
        return result

    def start_run(self, sandbox_id: str, session: str | None, command: str, *, timeout: float,
                  max_output: int | None, done: Callable[[CommandResult | None, Exception | None], None]
                  ) -> bool:
        """run() with no task: the command is sent now and done(result, None) or done(None,
        error) is called from the loop when it ends; the errors and history are run()'s.
        False, and nothing sent, when the agent's connection is not open yet or goes through a
        node host: use run(). Errors of the sandbox's state are raised here.

        The run stream starts each of its commands so: a task and its chain of coroutines
        (run -> do -> call -> host.call -> agent.call) cost ~30 us of CPU a command."""
        record = self._running(sandbox_id)
        op = _run_op(record, session, command, timeout, max_output)
        started = self.host.start(sandbox_id, op)
        if started is None:
            return False
        self._asked(record)
        began = time.time()

        def settled(_future) -> None:
            self._answered(sandbox_id)
            try:
                result = self.host.outcome(sandbox_id, op, started)
            except Exception as exc:   # noqa: BLE001 - done() answers it, as run() would raise it
                return done(None, exc)
            self.history.record(sandbox_id, session or DEFAULT_SESSION, command, result, began,
                                result.output_bytes)
            done(result, None)
        started[1].add_done_callback(settled)
        return True

    async def input(self, sandbox_id: str, session: str, data: bytes) -> None:
        await self.do(sandbox_id, ops.session_input(session, data))

    async def interrupt(self, sandbox_id: str, session: str) -> bool:
        return await self.do(sandbox_id, ops.session_interrupt(session))

    async def close_session(self, sandbox_id: str, session: str) -> None:
        await self.do(sandbox_id, ops.session_close(session))

    # -- exec, files, processes ----------------------------------------------------------------

    async def exec(self, sandbox_id: str, req: wire.ExecRequest) -> ExecResult:
        command = req.argv if req.argv is not None else req.command
        return await self.do(sandbox_id, ops.exec_(
            command, env=req.env, cwd=req.cwd or self.get(sandbox_id).spec.cwd,
            stdin=wire.unb64(req.stdin_b64), timeout=req.timeout, max_output=req.max_output))

    async def read_file(self, sandbox_id: str, path: str, offset: int, length: int | None) -> bytes:
        return await self.do(sandbox_id, ops.read_file(sandbox_path(path), offset, length))

    async def read_file_chunks(self, sandbox_id: str, path: str, offset: int, length: int | None,
                               chunk: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """The file's bytes as chunks of at most `chunk` bytes, read from the agent one by one.

        A large file never sits whole in the server's memory, and no agent reply can be larger
        than a chunk. The first chunk is read before this returns, so a missing file or a bad
        path is an error of the call, not of a stream already under way.
        """
        limit = MAX_STREAM if length is None else length
        first = await self.read_file(sandbox_id, path, offset, min(chunk, limit))

        async def rest() -> AsyncIterator[bytes]:
            data, done = first, len(first)
            while True:
                yield data
                if len(data) < chunk or done >= limit:
                    return
                data = await self.read_file(sandbox_id, path, offset + done, min(chunk, limit - done))
                if not data:
                    return
                done += len(data)
        return rest()

    async def write_file(self, sandbox_id: str, path: str, data: bytes, mode: int | None,
                         append: bool) -> int:
        return await self.do(sandbox_id, ops.write_file(sandbox_path(path), data, mode=mode, append=append))

    async def stat(self, sandbox_id: str, path: str) -> FileInfo:
        return await self.do(sandbox_id, ops.stat(sandbox_path(path)))

    async def list_dir(self, sandbox_id: str, path: str) -> list[FileInfo]:
        return await self.do(sandbox_id, ops.list_dir(sandbox_path(path)))

    async def remove_file(self, sandbox_id: str, path: str, recursive: bool) -> None:
        await self.do(sandbox_id, ops.remove_file(sandbox_path(path), recursive))

    async def chmod(self, sandbox_id: str, path: str, mode: int) -> None:
        await self.do(sandbox_id, ops.chmod(sandbox_path(path), mode))

    async def mkdir(self, sandbox_id: str, path: str, parents: bool) -> None:
        await self.do(sandbox_id, ops.mkdir(sandbox_path(path), parents))

    async def upload_tar(self, sandbox_id: str, path: str, tar: bytes) -> int:
        return await self.do(sandbox_id, ops.upload_tar(sandbox_path(path), tar))

    async def download_tar_chunks(self, sandbox_id: str, path: str) -> AsyncIterator[bytes]:
        """The tar of `path` in chunks: the agent writes it to a file on the sandbox's own disk,
        which is read out READ_CHUNK bytes at a time and removed, so no tar of any size sits
        whole in the server (or in the agent)."""
        scratch = f"/.tumbler-download-{secrets.token_hex(8)}.tar"
        await self.do(sandbox_id, ops.download_tar(sandbox_path(path), to=scratch))
        try:
            chunks = await self.read_file_chunks(sandbox_id, scratch, 0, None)
        except BaseException:
            await self._remove_scratch(sandbox_id, scratch)
            raise

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await self._remove_scratch(sandbox_id, scratch)
        return stream()

    async def _remove_scratch(self, sandbox_id: str, scratch: str) -> None:
        try:
            await self.do(sandbox_id, ops.remove_file(scratch))
        except TumblerError as exc:   # the sandbox went meanwhile: the file went with it
            log.info("sandbox %s: scratch %s not removed: %s", sandbox_id, scratch, exc)

    async def processes(self, sandbox_id: str, touch: bool = True) -> list[ProcessInfo]:
        return await self.do(sandbox_id, ops.processes(), touch=touch)

    async def signal(self, sandbox_id: str, pid: int, signal: int | str) -> None:
        await self.do(sandbox_id, ops.signal(pid, signal))

    # -- helpers -------------------------------------------------------------------------------

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` as a task that outlives the request that started it."""
        return self.host.spawn(coro)

    async def blocking(self, fn: Callable[..., T], *args) -> T:
        """Run a blocking call (runc, SQL) in the host's worker threads."""
        return await self.host.blocking(fn, *args)

def _fix(sandbox_id: str) -> str:
    return (f"`tumbler sandbox start {sandbox_id}` (files kept) or `tumbler sandbox reset "
            f"{sandbox_id}` (pristine image); over HTTP POST /v1/sandboxes/{sandbox_id}/start or "
            "/reset; or remove it")


def sandbox_path(path: str) -> str:
    """`path` if it is absolute; InvalidRequest (400) otherwise. '..' needs no check here: the
    agent resolves every path inside the sandbox's own root, so it cannot lead out."""
    try:
        return wire.check_sandbox_path(path)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None


def _run_op(record: SandboxRecord, session: str | None, command: str, timeout: float,
            max_output: int | None, stream: bool = False) -> ops.Op:
    """The agent op of a command: the default session (None) starts in the sandbox's cwd."""
    return ops.run(command, session=session, timeout=timeout, max_output=max_output,
                   stream=stream, cwd=record.spec.cwd if session is None else None)
