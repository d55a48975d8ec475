"""SandboxHost: the one owner, on the host side, of the sandboxes of one runtime as an asyncio
service holds them: how a sandbox is made, its agent connection, the calls to its agent and
what a hang-up of that agent means.

    host = SandboxHost(runtime, threads=16, fix=lambda sid: "reset it", check_alive=watch)
    info = await host.blocking(host.make, spec)        # created and started, or nothing left
    result = await host.do(info.id, ops.run("echo hi"))
    await host.drop_agent(info.id)

Both asyncio owners of sandboxes are built on it: the server's `SandboxService` (which adds the
registry, admission, the records' life cycle and restart reconciliation) and a cluster's
`NodeHost` (which adds the ledger, the reclaim of a dead predecessor's sandboxes and the Ray
batches). The default session is the agent's (`ops.run` with no session makes it on the first
command and again after `exit`, in the same round trip), so no owner opens one.

Every method is awaited on one event loop (an agent connection belongs to the loop that opened
it); only the runtime's blocking steps (runc, mounts, SQL where the owner has some) go to the
host's worker threads.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Protocol, TypeVar

from tumbler import ops
from tumbler.agentclient.aio import AsyncAgentClient
from tumbler.agentclient.errors import AGENT_FAILURES, agent_error, agent_errors
from tumbler.errors import AgentDied
from tumbler.runtime.base import Runtime
from tumbler.runtime.liveness import init_alive
from tumbler.runtime.spec import SandboxInfo, SandboxSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
OP_TIMEOUT_S = 60.0          # agent ops that carry no timeout of their own
# The init closes its sockets a moment before /proc shows it exited: how long, in seconds, a
# hang-up is followed by looks at /proc before it counts as a closed connection, not a death.
EXIT_GRACE_S = 2.0
EXIT_POLL_S = 0.02


class AgentLink(Protocol):
    """A sandbox's agent as the host calls it: `AsyncAgentClient`, or in the server's cluster
    mode the sandbox's node host (`cluster.runtime.RemoteAgent`)."""

    async def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = OP_TIMEOUT_S, on_event=None) -> tuple[dict, bytes]: ...

    async def close(self) -> None: ...


# What the owner does when an agent hung up: look whether its init died, and if so move the
# sandbox by `die` -> True (handled: stop looking), False (alive: look again a moment later),
# None (nothing to look at: not running, or a life-cycle change decides).
CheckAlive = Callable[[str], Awaitable[bool | None]]


def make(runtime: Runtime, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
    """Create and start one sandbox (blocking) -> its info, running. A failed start removes
    what the create made, so a failure leaves nothing behind."""
    info = runtime.create(spec, sandbox_id)
    try:
        return runtime.start(info.id)
    except BaseException:
        runtime.remove(info.id)
        raise


class SandboxHost:
    """The sandboxes of one runtime: made, their agents called, their agents' deaths seen."""

    def __init__(self, runtime: Runtime, *, threads: int, fix: Callable[[str], str],
                 check_alive: CheckAlive | None = None, thread_name: str = "runtime"):
        self.runtime = runtime
        self._fix = fix                      # what to do about a dead agent, for its error
        self._check_alive = check_alive
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=thread_name)
        self._agents: dict[str, AgentLink] = {}
        self._background: set[asyncio.Task] = set()

    # -- the runtime ---------------------------------------------------------------------------

    def make(self, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
        """`make` on this host's runtime (blocking: run it with `blocking`)."""
        return make(self.runtime, spec, sandbox_id)

    def init_alive(self, sandbox_id: str) -> bool:
        return init_alive(self.runtime, sandbox_id)

    async def blocking(self, fn: Callable[..., T], *args) -> T:
        """Run a blocking call (runc, SQL) in the host's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` as a task that outlives the call that started it."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- agent connections ---------------------------------------------------------------------

    def agent(self, sandbox_id: str) -> AgentLink:
        """The sandbox's agent connection, opened at its first call."""
        link = self._agents.get(sandbox_id)
        if link is None:
            remote = getattr(self.runtime, "agent_client", None)   # cluster mode: via its node host
            if remote is not None:
                link = remote(sandbox_id)
            else:
                link = AsyncAgentClient(self.runtime.agent_socket(sandbox_id),
                                        on_lost=lambda: self.spawn(self._hung_up(sandbox_id)))
            self._agents[sandbox_id] = link
        return link

    async def drop_agent(self, sandbox_id: str) -> None:
        """Close the sandbox's agent connection (before a stop, reset or remove: a new init
        answers on a new connection)."""
        link = self._agents.pop(sandbox_id, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        """Close every agent connection and the worker threads (the sandboxes stay)."""
        for sandbox_id in list(self._agents):
            await self.drop_agent(sandbox_id)
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, sandbox_id: str, op: str, args: dict | None = None, body: bytes = b"", *,
                   timeout: float = OP_TIMEOUT_S, on_event=None) -> tuple[dict, bytes]:
        """One request to the sandbox's agent, its failures turned into tumbler.errors (a
        hang-up: AgentDied, whether the death watch or this call saw it first). The caller
        has checked that the sandbox runs."""
        link = self.agent(sandbox_id)
        with agent_errors(sandbox_id, op, timeout,
                          on_gone=lambda detail: self.agent_died(sandbox_id, detail)):
            return await link.call(op, args, body, timeout=timeout, on_event=on_event)

    def start(self, sandbox_id: str, op: ops.Op) -> tuple[AsyncAgentClient, asyncio.Future] | None:
        """Send `op` now on the agent connection already open -> what outcome() reads once its
        future is done; None when none is open (or calls go through a node host): use call()."""
        link = self.agent(sandbox_id)
        start = getattr(link, "start", None)
        future = None if start is None else start(op.name, op.args, op.body, timeout=op.timeout)
        return None if future is None else (link, future)

    def outcome(self, sandbox_id: str, op: ops.Op, started: tuple[AsyncAgentClient, asyncio.Future]):
        """The parsed reply of a start()ed op, or the error call() would have raised."""
        link, future = started
        try:
            reply = link.outcome(future, op.name)
        except AGENT_FAILURES as exc:
            raise agent_error(exc, sandbox_id, op.name, op.timeout,
                              lambda detail: self.agent_died(sandbox_id, detail)) from None
        return op.parse(*reply)

    async def do(self, sandbox_id: str, op: ops.Op, on_event=None):
        """Send one op of `tumbler.ops` to the sandbox's agent and parse its reply."""
        return op.parse(*await self.call(sandbox_id, op.name, op.args, op.body,
                                         timeout=op.timeout, on_event=on_event))

    def agent_died(self, sandbox_id: str, detail: str) -> AgentDied:
        """The one error of a call to a sandbox whose agent is gone."""
        return AgentDied(f"the agent of sandbox {sandbox_id} is gone ({detail}); its processes "
                         f"died or were killed. Fix: {self._fix(sandbox_id)}")

    async def _hung_up(self, sandbox_id: str) -> None:
        """The agent closed a connection: it died (look a short while), or it just closed it."""
        if self._check_alive is None:
            return
        deadline = time.monotonic() + EXIT_GRACE_S
        while time.monotonic() < deadline:
            if await self._check_alive(sandbox_id) is not False:
                return
            await asyncio.sleep(EXIT_POLL_S)
