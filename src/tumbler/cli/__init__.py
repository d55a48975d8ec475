"""The one `tumbler` command (entry point `tumbler.cli:app`), a module per command group:

    main.py     the app: wires the groups below, the trainer's `train` and the tasks' `tasks`
    local.py    `tumbler local ...`: sandboxes on this machine, no server (process runtime)
    images.py   `tumbler image ...`: the process runtime's images (build, Dockerfiles, import)
    remote.py   `tumbler sandbox ...` and `tumbler pool ...`: a server's, through the SDK
    serve.py    `tumbler serve`: the server under uvicorn
    options.py  the options several commands share (limits, env, server URL and token)
    errors.py   how a command reports a TumblerError (message on stderr, exit status 2)
    help.py     flags drawn as flags in --help

`app` is made on first use, so `tumbler.cli.errors` (which `train/cli.py` and `tasks/cli.py`
import) does not pull in every command, the trainer's among them.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name == "app":
        from tumbler.cli.main import app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
