"""How a bridge reaches one sandbox's agent: an `Endpoint` is one async method, `call(op, ...)`.

`LocalEndpoint` drives a `LocalSandbox` on this host. Its agent client blocks, so each endpoint
has two daemon threads: one that holds the long-poll (`model.next`) and one for everything else
(answers, starts), so an answer never waits behind a poll. The SDK's HTTP endpoint
(`tumbler.sdk.model`) maps the same ops to the server's routes.
"""
from __future__ import annotations

import asyncio
import json
import queue
import threading
from typing import Callable, Protocol

from tumbler.local import LocalSandbox


class Endpoint(Protocol):
    """One sandbox's model ops (`tumbler.agent.modelhost`), errors raised as tumbler.errors."""

    sandbox_id: str

    async def call(self, op: str, args: dict, body: bytes = b"", *,
                   timeout: float) -> tuple[dict, bytes]:
        """One op -> (result, body); timeout in seconds."""

    async def close(self) -> None:
        """Release what the endpoint holds; a poll in flight may finish on its own."""


class LocalEndpoint:
    """An Endpoint over a LocalSandbox (same host, agent socket)."""

    def __init__(self, sandbox: LocalSandbox):
        self.sandbox = sandbox
        self.sandbox_id = sandbox.id
        self._poller = _Worker(f"model-poll-{sandbox.id}")
        self._worker = _Worker(f"model-ops-{sandbox.id}")

    async def call(self, op: str, args: dict, body: bytes = b"", *,
                   timeout: float) -> tuple[dict, bytes]:
        worker = self._poller if op == "model.next" else self._worker
        return await worker.run(lambda: self.sandbox.call(op, args, body, timeout=timeout))

    async def close(self) -> None:
        self._poller.stop()
        self._worker.stop()


class _Worker:
    """A daemon thread that runs blocking functions one at a time for an event loop.

    Daemon, unlike an executor's threads, so a long-poll still in flight never delays exit.
    """

    def __init__(self, name: str):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    async def run(self, fn: Callable):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((fn, loop, future))
        return await future

    def stop(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, loop, future = job
            try:
                outcome, value = True, fn()
            except BaseException as e:   # handed to the awaiting coroutine, not lost here
                outcome, value = False, e
            try:
                loop.call_soon_threadsafe(_settle, future, outcome, value)
            except RuntimeError:   # the loop closed while the job ran: nobody awaits it
                pass


def _settle(future: asyncio.Future, ok: bool, value) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def unpack_calls(result: dict, body: bytes) -> list[dict]:
    """The calls of a model.next reply, each with its `request` parsed.

    The agent sends the requests' raw JSON concatenated in the body (`size` bytes each); an
    endpoint that already parsed them (the HTTP one) puts `request` in each call.
    """
    calls, offset = [], 0
    for meta in result.get("calls", []):
        if "request" not in meta:
            size = meta["size"]
            meta = {**meta, "request": json.loads(body[offset:offset + size])}
            offset += size
        calls.append(meta)
    return calls
