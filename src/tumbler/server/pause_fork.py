"""Pause, resume and fork of the server's sandboxes, beside SandboxService's own life cycle.

Pause freezes every process of a sandbox (the runtime's cgroup freezer): its memory is kept and
it uses no CPU; agent calls are refused (409) until it is resumed. Its place in the node budget
is kept, and its deadlines (ttl, max lifetime) keep counting: a paused sandbox no one resumes is
removed when they pass, as a running one would be.

Fork makes N new running sandboxes with copies of a running or paused sandbox's files (not its
processes or memory). The new ones are recorded and hold their places before the runtime makes
them, and if any of them fails to start, all of them go: a fork makes all N or none.
"""
from __future__ import annotations

import asyncio
import logging
import time

from tumbler.errors import InvalidRequest, NotFound, TumblerError
from tumbler.runtime.spec import SandboxState, new_sandbox_id, transition
from tumbler.server.registry import SandboxRecord
from tumbler.server.service import SandboxService

log = logging.getLogger(__name__)
MAX_FORK = 256   # new sandboxes one fork may make


async def pause(svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    return await _change(svc, sandbox_id, "pause", svc.runtime.pause)


async def resume(svc: SandboxService, sandbox_id: str) -> SandboxRecord:
    return await _change(svc, sandbox_id, "resume", svc.runtime.resume)


async def _change(svc: SandboxService, sandbox_id: str, op: str, runtime_call) -> SandboxRecord:
    record = svc.get(sandbox_id)
    async with svc._lock(sandbox_id):
        target = transition(sandbox_id, record.state, op)
        await svc.blocking(runtime_call, sandbox_id)
        await _set_state(svc, record, target)
        return record


async def fork(svc: SandboxService, sandbox_id: str, count: int,
               labels: dict[str, str] | None = None) -> list[SandboxRecord]:
    """`count` new running sandboxes with copies of `sandbox_id`'s files; all or none."""
    if not 1 <= count <= MAX_FORK:
        raise InvalidRequest(f"count must be between 1 and {MAX_FORK}, not {count}")
    source = svc.get(sandbox_id)
    transition(sandbox_id, source.state, "fork")     # a clear 409 before anything is made
    records = _child_records(source, count, labels or {})
    held: list[str] = []
    try:
        for record in records:
            svc.admission.reserve(record.id, record.spec.limits)
            held.append(record.id)
            # Recorded before the runtime makes it, as a create is: a server killed mid-fork
            # leaves records its next start reconciles, never sandboxes no one knows.
            await svc.blocking(svc.registry.add, record)
        async with svc._lock(sandbox_id):
            transition(sandbox_id, svc.get(sandbox_id).state, "fork")
            await svc.blocking(svc.runtime.fork, sandbox_id, [r.id for r in records], labels)
        started = await asyncio.gather(*(svc.blocking(svc.runtime.start, r.id) for r in records),
                                       return_exceptions=True)
        failed = [s for s in started if isinstance(s, BaseException)]
        if failed:
            raise failed[0]
        for record in records:
            await _set_state(svc, record, SandboxState.RUNNING)
            svc._records[record.id] = record
    except BaseException:
        await _undo(svc, records, held)
        raise
    return records


def _child_records(source: SandboxRecord, count: int, labels: dict[str, str]) -> list[SandboxRecord]:
    """The new sandboxes' records: the source's spec with `labels` added, its idle ttl, and a
    max lifetime as long as the source's, counted from now."""
    now = time.time()
    spec = source.spec.model_copy(update={"labels": {**source.spec.labels, **labels}})
    lifetime = source.expires_at - source.created if source.expires_at is not None else None
    return [SandboxRecord(id=new_sandbox_id(), spec=spec, state=SandboxState.CREATED,
                          created=now, last_active=now, ttl_s=source.ttl_s,
                          expires_at=now + lifetime if lifetime is not None else None,
                          runtime=source.runtime)
            for _ in range(count)]


async def _undo(svc: SandboxService, records: list[SandboxRecord], held: list[str]) -> None:
    """Remove whatever part of a failed fork was made: sandboxes, records, budget places."""
    for record in records:
        svc._records.pop(record.id, None)
        try:
            await svc.blocking(svc.runtime.remove, record.id)
        except NotFound:
            pass
        except TumblerError as exc:   # logged; the fork's own error is the one to raise
            log.warning("fork: sandbox %s not removed: %s", record.id, exc.message)
        await svc.blocking(svc.registry.delete, record.id)
    for sandbox_id in held:
        svc.admission.release(sandbox_id)


async def _set_state(svc: SandboxService, record: SandboxRecord, state: SandboxState) -> None:
    record.state, record.error = state, None
    await svc.blocking(svc.registry.set_state, record.id, state)
