"""The in-sandbox agent client's errors, said in Tumbler's: one translation for every caller
(LocalSandbox, the server, node hosts, the model-service bridge)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from tumbler.agentclient.blocking import AgentGone
from tumbler.agent.protocol import AgentRequestError
from tumbler.errors import AgentDied, CommandTimeout, TumblerError, from_kind


# What an agent call raises that agent_error translates.
AGENT_FAILURES = (AgentRequestError, AgentGone, TimeoutError)


@contextlib.contextmanager
def agent_errors(sandbox_id: str, op: str, timeout: float | None,
                 on_gone: Callable[[str], TumblerError] | None = None) -> Iterator[None]:
    """Around one agent call: its refusal -> the matching TumblerError, a hang-up -> AgentDied
    (or what `on_gone(detail)` makes), no answer in time -> CommandTimeout."""
    try:
        yield
    except AGENT_FAILURES as exc:
        raise agent_error(exc, sandbox_id, op, timeout, on_gone) from None


def agent_error(exc: Exception, sandbox_id: str, op: str, timeout: float | None,
                on_gone: Callable[[str], TumblerError] | None = None) -> Exception:
    """agent_errors' translation of one error, for a caller with no `with` around its call (a
    done callback); any other error comes back as it is."""
    if isinstance(exc, AgentRequestError):
        return from_kind(exc.kind, exc.message)
    if isinstance(exc, AgentGone):
        return (on_gone(str(exc)) if on_gone else
                AgentDied(f"the agent of sandbox {sandbox_id} is gone ({exc}); "
                          "reset or restart the sandbox"))
    if isinstance(exc, TimeoutError):
        return CommandTimeout(f"sandbox {sandbox_id} did not answer {op} within {timeout} s")
    return exc
