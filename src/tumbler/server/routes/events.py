"""/v1/events: what the console shows, as server-sent events, sent when it changes.

One stream per viewer. Every `interval` seconds the server looks at the sandboxes, pools and
nodes (and, when asked, one sandbox's stats, sessions and processes, and one training run's
new metrics lines) and sends each part whose JSON differs from what it sent last (stats: every
look, a time series). Events:
`sandboxes` (SandboxList), `pools` (PoolList), `nodes` (NodeList), `stats` / `sessions` /
`processes` (of `sandbox`; an `{"error": ...}` body when the sandbox cannot answer),
`run` (TrainRunOut of `run`) and `metrics` (TrainRunMetrics: only lines not sent yet); with
`task_run`: `results` (TaskRunResults: the trials finished since the last).
A comment line every PING_S keeps proxies from closing a quiet stream; a stream ends after
`max_s` (every wait has an end; the console reconnects and is sent everything again). Watching is not use:
the looks leave a sandbox's idle TTL running.
"""
from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from tumbler import wire
from tumbler.errors import CapacityExceeded, TumblerError
from tumbler.server.routes import service, sse_event
from tumbler.server.routes.nodes import all_nodes
from tumbler.server.routes.runs import store

router = APIRouter(tags=["events"])
PING_S = 15.0
MAX_STREAMS = 64          # open event streams at once; each polls every `interval`
SHARED_S = 0.15           # seconds the common parts are reused across streams


@router.get("/v1/events", responses={200: {"content": {"text/event-stream": {}}}})
async def events(request: Request,
                 sandbox: str | None = Query(None, description="also its stats, sessions, processes"),
                 run: str | None = Query(None, description="also this training run's metrics"),
                 task_run: str | None = Query(None, description="also this task run's results"),
                 interval: float = Query(1.0, ge=0.2, le=60, description="seconds between looks"),
                 max_s: float = Query(600.0, ge=1, le=86400, description="seconds before the "
                                      "stream ends (a client reconnects)")):
    """Server-sent events of the server's state, each part sent when it changes."""
    if sandbox is not None:
        service(request).get(sandbox)      # unknown ids are a plain 404, not a stream
    for name in (run, task_run):
        if name is not None:
            await asyncio.to_thread(store(request).path, name)
    if request.app.state.event_streams >= MAX_STREAMS:
        raise CapacityExceeded(f"{MAX_STREAMS} event streams are open already; close one")
    tails = {kind: name for kind, name in (("metrics", run), ("results", task_run)) if name}
    return StreamingResponse(_counted(request.app.state,
                                      _feed(request, sandbox, run, tails, interval, max_s)),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _counted(state, feed):
    state.event_streams += 1
    try:
        async for chunk in feed:
            yield chunk
    finally:
        state.event_streams -= 1


async def _feed(request: Request, sandbox: str | None, run: str | None, tails: dict[str, str],
                interval: float, max_s: float):
    """`tails`: event kind -> run whose KIND.jsonl is sent line by line as it grows."""
    sent: dict[str, str] = {}
    sent_lines = dict.fromkeys(tails, 0)
    last_write = time.monotonic()
    ends = last_write + max_s
    while time.monotonic() < ends:
        for kind, data in await _parts(request, sandbox, run):
            if sent.get(kind) != data or kind == "stats":   # stats: a sample every look
                sent[kind] = data
                last_write = time.monotonic()
                yield sse_event(kind, data)
        for kind, name in tails.items():
            lines = await _answer(_records(request, name, kind, sent_lines[kind]))
            if lines.get("records"):
                sent_lines[kind] = lines["next"]
                last_write = time.monotonic()
                yield sse_event(kind, json.dumps(lines))
        if time.monotonic() - last_write > PING_S:
            last_write = time.monotonic()
            yield b": ping\n\n"
        await asyncio.sleep(interval)


async def _parts(request: Request, sandbox: str | None, run: str | None) -> list[tuple[str, str]]:
    svc = service(request)
    parts = await _shared(request)
    if sandbox is not None:
        stats, sessions, processes = await asyncio.gather(
            _answer(_stats(svc, sandbox)), _answer(_sessions(svc, sandbox)),
            _answer(_processes(svc, sandbox)))
        parts += [("stats", json.dumps(stats)), ("sessions", json.dumps(sessions)),
                  ("processes", json.dumps(processes))]
    if run is not None:
        summary = await _answer(_run_summary(request, run))
        parts.append(("run", json.dumps(summary)))
    return parts


async def _shared(request: Request) -> list[tuple[str, str]]:
    """The parts every viewer gets (list, pools, nodes), made once per SHARED_S for all streams:
    N consoles open cost one serialization of a thousand sandboxes, not N."""
    state = request.app.state
    made_at, parts = getattr(state, "event_parts", (0.0, None))
    if parts is None or time.monotonic() - made_at > SHARED_S:
        svc = service(request)
        parts = [("sandboxes", wire.SandboxList(sandboxes=svc.list()).model_dump_json()),
                 ("pools", wire.PoolList(pools=state.pools.list()).model_dump_json()),
                 ("nodes", wire.NodeList(nodes=await all_nodes(request)).model_dump_json())]
        state.event_parts = (time.monotonic(), parts)
    return list(parts)


async def _answer(coro) -> dict:
    """The coroutine's dict, or the error it raised as the REST API would send it."""
    try:
        return await coro
    except TumblerError as exc:
        return {"error": {"kind": exc.kind, "message": exc.message}}


async def _stats(svc, sandbox: str) -> dict:
    if svc.get(sandbox).state != "running":
        return {"error": {"kind": "conflict", "message": "not running"}}
    return (await svc.stats(sandbox)).model_dump()


async def _sessions(svc, sandbox: str) -> dict:
    if svc.get(sandbox).state != "running":
        return {"sessions": []}
    return {"sessions": [wire.SessionOut(**s).model_dump() for s in await svc.list_sessions(sandbox, touch=False)]}


async def _processes(svc, sandbox: str) -> dict:
    if svc.get(sandbox).state != "running":
        return {"processes": []}
    return wire.ProcessList(processes=await svc.processes(sandbox, touch=False)).model_dump()


async def _run_summary(request: Request, run: str) -> dict:
    return await asyncio.to_thread(store(request).summary, run)


async def _records(request: Request, run: str, kind: str, after: int) -> dict:
    records = await asyncio.to_thread(store(request).records, run, kind, after)
    return {"records": records, "next": after + len(records)}
