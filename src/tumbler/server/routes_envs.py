"""Moved to `tumbler.server.routes.envs`; this name stays so older imports keep working."""
from tumbler.server.routes.envs import *  # noqa: F401,F403
from tumbler.server.routes.envs import rock_router, router  # noqa: F401
