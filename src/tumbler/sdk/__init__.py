"""The Python SDK of a Tumbler server: sync (`Sandbox`) and async (`AsyncSandbox`) clients.

Imports only tumbler.wire, tumbler.errors and tumbler.models (and httpx): never server or runtime.
`core.py` holds the wire logic; `sync.py` and `aio.py` are thin shells that send its calls.
"""
from tumbler.sdk.aio import AsyncClient, AsyncSandbox, AsyncSandboxGroup, AsyncSession
from tumbler.sdk.sync import Client, Sandbox, SandboxGroup, Session

__all__ = ["AsyncClient", "AsyncSandbox", "AsyncSandboxGroup", "AsyncSession", "Client",
           "Sandbox", "SandboxGroup", "Session"]
