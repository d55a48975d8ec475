"""Tumbler's one exception hierarchy.

    TumblerError                      base of everything Tumbler raises on purpose
    ├── InvalidRequest (ValueError)   bad input from the caller: says what to fix
    ├── NotFound (LookupError)        unknown sandbox, image, session, process
    ├── AlreadyExists                 a name that is taken (image, session)
    ├── Conflict                      the operation does not fit the current state
    │                                 (a command on a closed session, start of a removed sandbox)
    ├── CapacityExceeded              the node has no room for another sandbox
    ├── Unauthorized                  missing or wrong bearer token (server, SDK)
    ├── TooLarge (InvalidRequest)     a request body over the server's size limit
    ├── ServerUnreachable (ConnectionError)  the SDK could not reach the server
    ├── CommandTimeout (TimeoutError) a wait ran past its deadline
    ├── SandboxError                  the sandbox or its agent failed (died, did not start)
    │   ├── AgentDied                 the in-sandbox agent is gone
    │   └── NodeLost                  the node (its Ray node host) is gone, and its sandboxes with it
    └── RuntimeFailure                the host side failed (runc, mount, image build)

Each class carries `status`, the HTTP status code the server maps it to; that table lives
here, in one place, and the SDK maps codes back with `error_for_status`.
The in-sandbox agent has its own stdlib-only copy of the names (`tumbler.agent.protocol`):
its error replies carry `kind`, which `from_agent` turns into one of these.
"""
from __future__ import annotations


class TumblerError(Exception):
    """Base of all Tumbler errors."""

    status = 500
    kind = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidRequest(TumblerError, ValueError):
    status = 400
    kind = "invalid"


class NotFound(TumblerError, LookupError):
    status = 404
    kind = "not_found"


class AlreadyExists(TumblerError):
    status = 409
    kind = "exists"


class Conflict(TumblerError):
    status = 409
    kind = "conflict"


class CapacityExceeded(TumblerError):
    status = 429
    kind = "capacity"


class Unauthorized(TumblerError):
    status = 401
    kind = "unauthorized"


class TooLarge(InvalidRequest):
    status = 413
    kind = "too_large"


class ServerUnreachable(TumblerError, ConnectionError):
    status = 503
    kind = "unreachable"


class CommandTimeout(TumblerError, TimeoutError):
    status = 504
    kind = "timeout"


class SandboxError(TumblerError):
    status = 502
    kind = "sandbox"


class AgentDied(SandboxError):
    kind = "agent_died"


class NodeLost(SandboxError):
    kind = "node_lost"


class RuntimeFailure(TumblerError):
    status = 500
    kind = "runtime"


_BY_KIND = {cls.kind: cls for cls in (
    TumblerError, InvalidRequest, NotFound, AlreadyExists, Conflict, CapacityExceeded,
    Unauthorized, TooLarge, ServerUnreachable, CommandTimeout, SandboxError, AgentDied,
    NodeLost, RuntimeFailure,
)}


def from_kind(kind: str, message: str) -> TumblerError:
    """The error of this kind (as sent by the agent or the server) with this message."""
    return _BY_KIND.get(kind, TumblerError)(message)
