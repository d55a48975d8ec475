"""Tumbler: isolated Linux sandboxes for LLM agents.

    from tumbler import LocalSandbox
    with LocalSandbox(image="debian") as sb:
        print(sb.run("echo hi").output)
"""
from tumbler.errors import TumblerError

__version__ = "0.1.0"

__all__ = ["AsyncClient", "AsyncSandbox", "AsyncSandboxGroup", "Client", "LocalSandbox", "Sandbox",
           "SandboxGroup", "TumblerError", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import tumbler` stays cheap for the CLI and the SDK.
    if name == "LocalSandbox":
        from tumbler.local import LocalSandbox
        return LocalSandbox
    if name in ("Sandbox", "AsyncSandbox", "SandboxGroup", "AsyncSandboxGroup", "Client",
                "AsyncClient"):
        from tumbler import sdk
        return getattr(sdk, name)
    raise AttributeError(name)
