"""The connection to a container engine (Docker, or Podman's Docker-compatible service).

Where the engine is: the `base_url` passed in, else `DOCKER_HOST`, else the first of Docker's
socket and the one `scripts/podman-service.sh` starts that exists. Every call has a timeout,
and the engine's own errors are turned into Tumbler's at this boundary (`engine_errors`), so
callers only ever catch `TumblerError`s whose message names the socket and the fix.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from tumbler.config import Paths
from tumbler.errors import Conflict, InvalidRequest, NotFound, RuntimeFailure

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0     # to reach the engine and read its version
API_TIMEOUT_S = 60.0        # any one API call (container create, start, kill, commit)
IMAGE_TIMEOUT_S = 600.0     # image import, export and pull: the engine answers when done
DOCKER_SOCKET = "/var/run/docker.sock"
START_HINT = "start Podman's service with `scripts/podman-service.sh` or Docker with `systemctl start docker`"


def podman_socket(paths: Paths | None = None) -> str:
    """Where `scripts/podman-service.sh` serves Podman's Docker API."""
    return str((paths or Paths.from_env()).run / "podman.sock")


def engine_url(base_url: str | None = None, paths: Paths | None = None) -> str:
    """The engine's address: `base_url`, `DOCKER_HOST`, or the first socket that exists."""
    if base_url:
        return base_url
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    for path in (DOCKER_SOCKET, podman_socket(paths)):
        if os.path.exists(path):
            return f"unix://{path}"
    return f"unix://{DOCKER_SOCKET}"


def connect(base_url: str | None = None, *, timeout_s: float = API_TIMEOUT_S,
            paths: Paths | None = None):
    """A `docker.DockerClient` that has answered a ping, or RuntimeFailure within ~5 s."""
    import docker
    url = engine_url(base_url, paths)
    try:
        # The client reads the engine's API version on construction: keep that wait short.
        client = docker.DockerClient(base_url=url, timeout=CONNECT_TIMEOUT_S)
        client.ping()
    except Exception as exc:  # the docker package raises several unrelated types here
        raise RuntimeFailure(f"no container engine answers at {url} ({_short(exc)}); "
                             f"{START_HINT}, or set DOCKER_HOST") from None
    client.api.timeout = timeout_s
    return client


@contextmanager
def engine_errors(what: str, url: str) -> Iterator[None]:
    """Turn the docker package's errors during `what` into Tumbler's."""
    import docker.errors
    import requests.exceptions
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise NotFound(f"{what}: no such image ({_explain(exc)}); import one with "
                       "`tumbler image to-docker NAME` or pull it") from None
    except docker.errors.NotFound as exc:
        raise NotFound(f"{what}: {_explain(exc)}") from None
    except docker.errors.APIError as exc:
        if exc.status_code == 409:
            raise Conflict(f"{what}: {_explain(exc)}") from None
        if exc.status_code == 400:
            raise InvalidRequest(f"{what}: {_explain(exc)}") from None
        raise RuntimeFailure(f"{what}: the engine at {url} said: {_explain(exc)}") from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise RuntimeFailure(f"{what}: the container engine at {url} did not answer "
                             f"({_short(exc)}); {START_HINT}") from None
    except docker.errors.DockerException as exc:
        raise RuntimeFailure(f"{what}: {_short(exc)}") from None


def _explain(exc) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[:limit] + "..."
