"""`create_app(config)`: the FastAPI application, its middleware and its lifespan."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

import tumbler
from tumbler import memstats, wire
from tumbler.runtime.base import Runtime
from tumbler.server import errors, metrics
from tumbler.server.auth import BearerAuth
from tumbler.server.config import ServerConfig
from tumbler.server import fastpath
from tumbler.server.fastpath import FastRun
from tumbler.server.limits import BodyLimit
from tumbler.server.reaper import Reaper
from tumbler.server.rock_deadlines import RockDeadlines
from tumbler.server.routes import e2b, e2b_envd, pause_fork as pause_fork_routes, rock_lifecycle
from tumbler.server.routes import ports as port_routes, pty as pty_routes
from tumbler.server.registry import Registry
from tumbler.server.routes import (envs, events, files, model, nodes, ops, pools as pool_routes,
                                   processes, rock, runs, sandboxes, sessions, system)
from tumbler.server.runs import RunStore
from tumbler import console
from tumbler.server.pools import PoolManager
from tumbler.server.service import SandboxService, SandboxSource
from tumbler.server.statelock import StateLock

log = logging.getLogger(__name__)


class RequestTimer:
    """Observes each request's latency (seconds) under its route template, not its raw path."""

    def __init__(self, app):
        self.app = app
        self._children: dict[tuple[str, str], object] = {}   # labels() costs a lock and a hash

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == wire.RUN_STREAM_PATH:
            return await self.app(scope, receive, send)   # (a stream lasts as its client does)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = getattr(scope.get("route"), "path", None) or scope.get("tumbler.route", "unmatched")
            key = (scope["method"], route)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = metrics.REQUEST_SECONDS.labels(*key)
            child.observe(time.perf_counter() - start)


class TumblerAPI(FastAPI):
    """FastAPI, but a command (fastpath.match) goes straight to `fast`: the same middlewares of
    ours in the same order (auth, timer, body limit, catch-all, FastRun), without the layers
    Starlette and FastAPI put around every request (error page, exception telemetry, body-limit
    wrapper, the telemetry check), which cost the command route ~10% of its CPU and do nothing
    for it: CatchAll answers an unexpected error with the same 500. When FastAPI's native
    telemetry is on (an OpenTelemetry provider is set up) or a root path is set, commands take
    the full stack like every other request, so they are traced too."""

    fast = None   # the command routes' middleware chain, set by create_app

    async def __call__(self, scope, receive, send):
        fast = self.fast
        if (fast is not None and scope["type"] == "http" and scope["method"] == "POST"
                and fastpath.match(scope["path"]) is not None and not self.root_path):
            telemetry = getattr(self, "_native_telemetry", None)
            if telemetry is None or not telemetry.enabled():
                scope["app"] = self
                return await fast(scope, receive, send)
        return await super().__call__(scope, receive, send)


def create_app(config: ServerConfig, *, runtime: Runtime | None = None,
               source: SandboxSource | None = None) -> FastAPI:
    """The server app. `runtime` defaults to ProcessRuntime; `source` is an optional warm pool."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        memstats.tune()   # a server lives for days: big freed blocks go back to the kernel
        # One live server per state dir: a second would reclaim the first's pools (statelock.py).
        state_lock = StateLock(config.state_dir)
        state_lock.acquire(config.host, config.port)
        try:
            async with _serving(app, config, runtime, source):
                yield
        finally:
            state_lock.release()

    @contextlib.asynccontextmanager
    async def _serving(app: FastAPI, config: ServerConfig, runtime, source):
        rt = runtime or await asyncio.to_thread(_runtime_for, config)
        registry = await asyncio.to_thread(Registry, config.database_url)
        service = SandboxService(config, rt, registry, source)
        if hasattr(rt, "live_budget"):   # cluster mode: admit what the live nodes give in all
            service.admission.budget = rt.live_budget()
        pools = PoolManager(rt, owner=config.database_url, admission=service.admission)
        if source is None:
            service.source = pools
        await service.open()
        reclaimed = await pools.reclaim_orphans(set(service.ids()))
        if reclaimed:
            log.info("removed %d pooled sandboxes a previous server left waiting", reclaimed)
        if hasattr(rt, "remove_unknown"):   # cluster mode: what a killed server had forgotten
            forgotten = await asyncio.to_thread(rt.remove_unknown, set(service.ids()))
            if forgotten:
                log.warning("removed %d sandboxes on the node hosts that no record names: %s",
                            len(forgotten), ", ".join(forgotten))
        for pool in config.pools:
            pools.set(pool.name, wire.CreateSandboxRequest(image=pool.image).spec(),
                      pool.size, pool.per_node)
        app.state.pools = pools
        app.state.service = service
        app.state.metrics_registry.register(metrics.SandboxCollector(service))
        app.state.metrics_registry.register(metrics.MemoryCollector())
        reaper = Reaper(service, config.reap_interval_s)
        app.state.reaper = reaper
        reaper.start()
        rock_deadlines = RockDeadlines(service, config.reap_interval_s)
        rock_deadlines.start()
        log.info("tumbler server ready on %s:%d (auth %s)", config.host, config.port,
                 "on" if config.tokens else "off")
        try:
            yield
        finally:
            await reaper.stop()
            await rock_deadlines.stop()
            await pools.close()  # pooled sandboxes belong to no one yet: never kept
            await service.close(keep_sandboxes=config.keep_sandboxes)
            if runtime is None and hasattr(rt, "close"):   # the cluster's node hosts
                await asyncio.to_thread(rt.close, config.keep_sandboxes)

    app = TumblerAPI(title="Tumbler", version=tumbler.__version__, lifespan=lifespan,
                  description="Isolated Linux sandboxes for LLM agents: life cycle, bash sessions, "
                              "exec, files and processes over HTTP. Errors are "
                              '{"error": {"kind", "message"}}.')
    app.state.config = config
    app.state.metrics_registry = CollectorRegistry(auto_describe=True)
    app.state.runs = RunStore(config.runs_dir)
    app.state.event_streams = 0
    app.state.stopping = asyncio.Event()   # set by `tumbler serve` at SIGTERM (run streams end)
    errors.install(app)
    for router in (system.router, sandboxes.router, pause_fork_routes.router, pty_routes.router,
                   port_routes.router,
                   e2b.router,
                   e2b_envd.router, sessions.router,
                   files.router, processes.router,
                   envs.router, envs.rock_router, rock.router,
                   rock_lifecycle.router, pool_routes.router, model.router,
                   ops.router, nodes.router, runs.router, events.router, console.router):
        app.include_router(router)
    # Added last = outermost: auth first, so an unauthenticated request reaches nothing.
    # FastRun answers the command routes before FastAPI's routing (see fastpath.py).
    app.add_middleware(errors.CatchAll)
    app.add_middleware(FastRun)
    app.add_middleware(BodyLimit, max_json=config.max_json_bytes, max_upload=config.max_upload_bytes)
    app.add_middleware(RequestTimer)
    if config.tokens:
        app.add_middleware(BearerAuth, tokens=config.tokens)

    async def unreachable(scope, receive, send):   # FastRun answers every request sent it
        await Starlette.__call__(app, scope, receive, send)
    fast = RequestTimer(BodyLimit(errors.CatchAll(FastRun(unreachable)),
                                  max_json=config.max_json_bytes, max_upload=config.max_upload_bytes))
    app.fast = BearerAuth(fast, tokens=config.tokens) if config.tokens else fast
    return app


def _runtime_for(config: ServerConfig) -> Runtime:
    """This machine's runtime (`backend`), or in cluster mode (`ray` set) the node hosts'."""
    if config.ray is None and config.backend == "docker":
        from tumbler.runtime.docker import DockerRuntime
        return DockerRuntime(config.engine)
    if config.ray is None:
        from tumbler.runtime.process import ProcessRuntime
        return ProcessRuntime()
    from tumbler.cluster.config import ClusterConfig
    from tumbler.cluster.placement import Budget
    from tumbler.cluster.runtime import ClusterRuntime, connect
    connect(config.ray)
    # Detached hosts outlive this process: a server SIGKILLed and started again (same
    # registry) takes them over, sandboxes and all, and reconciles (docs/CLUSTER.md).
    cluster = ClusterConfig(**{"backend": config.backend, "engine": config.engine, **config.cluster,
                               "detached": True, "owner": config.database_url})
    return ClusterRuntime(Budget(config.node_memory_bytes, config.node_pids, config.node_cpus),
                          policy=config.placement, config=cluster)
