"""`tumbler serve`: run the server under uvicorn (`run(config)` does it for a ServerConfig)."""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from tumbler.server.config import PoolConfig, ServerConfig

log = logging.getLogger(__name__)
_D = {name: field.default for name, field in ServerConfig.model_fields.items()}


def _size(n: int) -> str:
    """`n` bytes as 16g, 1m... (how --node-memory takes them)."""
    for unit, shift in (("t", 40), ("g", 30), ("m", 20), ("k", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _config(help: str, field: str | None = None, shown=str) -> typer.models.OptionInfo:
    """An option that overrides ServerConfig's `field` (unset: the environment's, else the
    config's default, which the help shows)."""
    return typer.Option(None, help=help + (f" (default {shown(_D[field])})" if field else ""))


def _bytes_shown(n: int) -> str:
    return f"{n}, {_size(n)}"


def serve(config_file: Optional[Path] = typer.Option(
              None, "--config", help="a YAML, TOML or JSON file of the server's settings, keyed "
              "by ServerConfig's field names (docs/SERVER.md); the environment and the options "
              "given here override it"),
          host: Optional[str] = _config("address to bind (non-loopback needs a token)", "host"),
          port: Optional[int] = _config("TCP port", "port"),
          token: Optional[list[str]] = _config("bearer token (repeatable); default: TUMBLER_TOKEN, "
                                               "comma-separated"),
          db_url: Optional[str] = _config("SQLAlchemy URL (default SQLite in the state dir); env "
                                          "TUMBLER_DB_URL"),
          state_dir: Optional[Path] = _config("where server.db lives (default TUMBLER_HOME, "
                                              "/var/lib/tumbler)"),
          node_memory: Optional[str] = _config("memory budget for all sandboxes, e.g. 16g",
                                               "node_memory_bytes", _size),
          node_pids: Optional[int] = _config("pids budget for all sandboxes", "node_pids"),
          node_cpus: Optional[float] = _config("cpu budget for all sandboxes, cores", "node_cpus",
                                               "{:g}".format),
          ttl: Optional[float] = _config("default idle TTL, seconds (default none, sandboxes stay)"),
          max_lifetime: Optional[float] = _config("default max lifetime, seconds (default none)"),
          reap_interval: Optional[float] = _config("seconds between reaper passes",
                                                   "reap_interval_s", "{:g}".format),
          max_json: Optional[int] = _config("largest JSON body, bytes", "max_json_bytes", _bytes_shown),
          max_upload: Optional[int] = _config("largest upload body, bytes", "max_upload_bytes",
                                              _bytes_shown),
          keep_sandboxes: bool = typer.Option(False, "--keep-sandboxes",
                                              help="leave sandboxes running at shutdown (for a restart)"),
          pool: Optional[list[str]] = _config("warm pool NAME=SIZE[:IMAGE] or NAME=N/node[:IMAGE] (N on "
                                              "each node, repeatable), e.g. debian=8"),
          runs_dir: Optional[Path] = _config("trainer run directories the console shows (default ./runs)"),
          backend: Optional[str] = _config("process (runc) or docker (a Docker-API engine: "
                                           "Docker or Podman)", "backend"),
          engine: Optional[str] = _config("backend docker: the engine's URL (default "
                                          "DOCKER_HOST, else /var/run/docker.sock, else "
                                          "/run/tumbler/podman.sock)"),
          ray: Optional[str] = _config("cluster mode: place sandboxes on the node hosts of this Ray "
                                       "cluster, 'auto' or HOST:PORT (docs/CLUSTER.md)"),
          placement: Optional[str] = _config("cluster mode: spread or pack", "placement"),
          log_level: Optional[str] = _config("debug, info, warning or error", "log_level")):
    """Serve the REST API (docs at /docs) and the web console (/ui)."""
    from tumbler.runtime.spec import parse_bytes
    try:
        load = (ServerConfig.from_env if config_file is None else
                lambda **kw: ServerConfig.from_file(config_file, **kw))
        config = load(
            host=host, port=port, tokens=token or None, db_url=db_url, state_dir=state_dir,
            node_memory_bytes=parse_bytes(node_memory) if node_memory else None,
            node_pids=node_pids, node_cpus=node_cpus, default_ttl_s=ttl,
            default_max_lifetime_s=max_lifetime, reap_interval_s=reap_interval,
            max_json_bytes=max_json, max_upload_bytes=max_upload,
            keep_sandboxes=keep_sandboxes or None, log_level=log_level, runs_dir=runs_dir,
            backend=backend, engine=engine, ray=ray, placement=placement,
            pools=[PoolConfig.parse(p) for p in pool] if pool else None)
    except ValueError as exc:
        typer.echo(f"error: {_first_message(exc)}", err=True)
        raise typer.Exit(2)
    run(config)


def run(config: ServerConfig) -> None:
    """Serve `config` in this process until SIGINT/SIGTERM (then shut down gracefully)."""
    import uvicorn
    from tumbler.errors import Conflict
    from tumbler.server.app import create_app
    from tumbler.server.statelock import StateLock
    try:  # say it plainly here; the app's own lock (held while it serves) is the real guard
        probe = StateLock(config.state_dir)
        probe.acquire(config.host, config.port)
        probe.release()
    except Conflict as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.ray:
        _keep_sigterm_graceful()
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.batch_scheduling:
        from tumbler.server.scheduling import use_batch_policy
        use_batch_policy()   # before any thread starts: they inherit it
    app = create_app(config)
    server = _server_class()(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level, access_log=False,
        loop="auto", http="auto", timeout_graceful_shutdown=30, proxy_headers=False))
    server.stopping = app.state.stopping
    server.run()


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, which also tells the app a shutdown began: uvicorn waits for the
        requests under way, and a client's run stream (`server.runstream`) is one that
        would otherwise go on until the graceful timeout."""

        stopping: asyncio.Event | None = None

        def handle_exit(self, sig, frame) -> None:
            if self.stopping is not None:
                try:
                    asyncio.get_running_loop().call_soon_threadsafe(self.stopping.set)
                except RuntimeError:   # no loop runs yet (a signal before the start)
                    pass
            super().handle_exit(sig, frame)
    return Server


def _keep_sigterm_graceful() -> None:
    """Cluster mode joins Ray, whose C++ core installs absl's failure signal handler: on
    SIGTERM it dumps a stack, then re-raises with the default action, which ended the server
    ~3 s into its graceful shutdown (sandboxes, pools and node hosts left to run on). Ray reads
    the switch when it is imported, so it is set before that; a process that imported Ray
    already keeps Ray's handler, and says so."""
    if "ray" in sys.modules:
        logging.getLogger(__name__).warning(
            "Ray was imported before the server: a SIGTERM may end it before its shutdown "
            "removes what it made (set RAY_DISABLE_FAILURE_SIGNAL_HANDLER=1 before importing ray)")
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def _first_message(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        return str(errors()[0].get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


if __name__ == "__main__":
    typer.run(serve)
