"""The control plane: a FastAPI app over the runtime and the in-sandbox agents.

    config.py       ServerConfig (one validated model; env TUMBLER_TOKEN etc.)
    app.py          create_app(config): routes, middleware, error mapping, lifespan
    service.py      SandboxService: the life cycle, admission, agent calls (routes call only this)
    registry.py     sandbox records in SQL (SQLite by default), survives restarts
    capacity.py     per-node admission budget
    reaper.py       idle-TTL and max-lifetime removal
    history.py      each session's last commands and the tail of their output (for viewers)
    runs.py         the trainer's and the task runner's run directories, read-only
    auth.py, limits.py, errors.py, metrics.py   middleware and the one error handler
    routes/         one module per resource (sandboxes, sessions, files, processes, system)
    cli.py          `tumbler serve`

The web console (`tumbler.console`) is a router of static files only; it knows the server
through the REST API, like any client. May import runtime, local, agentclient, ops, wire,
errors, models, console. Nothing
imports server except cli.py; a warm pool plugs in through `service.SandboxSource`, ROCK routes
as a router.
"""
