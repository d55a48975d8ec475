"""The sandbox handle: the one way a host-side caller reaches a sandbox, whatever carries it.

    class SandboxHandle(Protocol):
        id: str
        def call(op, args=None, body=b"", *, timeout, on_event=None) -> (result, body)

Three transports have it: `LocalSandbox` (the agent's unix socket), `tumbler.Sandbox` (a
server, over HTTP: `POST /v1/sandboxes/{id}/op`) and `ClusterClient.sandbox(id)` (a node host,
over Ray); `AsyncSandbox.call` is the same, awaited. Envs (`HostedEnv`, `HostedVectorEnv`) are
written against it alone; the ops themselves are built and parsed by `tumbler.ops`.
The batched form is `call_many([(sandbox_id, op), ...])` on a `Client`, `AsyncClient` or
`ClusterClient`: one request for many sandboxes, each answer its result or its error.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

from tumbler.ops import Op


@runtime_checkable
class SandboxHandle(Protocol):
    id: str

    def call(self, op: str, args: dict | None = None, body: bytes = b"", *,
             timeout: float = ..., on_event: Callable[[dict, bytes], None] | None = None
             ) -> tuple[dict, bytes]:
        ...


def do(handle: SandboxHandle, op: Op) -> Any:
    """Send one op of `tumbler.ops` through any handle and parse its reply."""
    return op.parse(*handle.call(op.name, op.args, op.body, timeout=op.timeout))


__all__ = ["SandboxHandle", "do"]
