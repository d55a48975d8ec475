"""The in-sandbox agent client's errors, said in Tumbler's: one translation for every caller
(LocalSandbox, the server, node hosts, the model-service bridge)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from tumbler.agentclient.blocking import AgentGone
from tumbler.agent.protocol import AgentRequestError
from tumbler.errors import AgentDied, CommandTimeout, TumblerError, from_kind


@contextlib.contextmanager
def agent_errors(sandbox_id: str, op: str, timeout: float | None,
                 on_gone: Callable[[str], TumblerError] | None = None) -> Iterator[None]:
    """Around one agent call: its refusal -> the matching TumblerError, a hang-up -> AgentDied
    (or what `on_gone(detail)` makes), no answer in time -> CommandTimeout."""
    try:
        yield
    except AgentRequestError as exc:
        raise from_kind(exc.kind, exc.message) from None
    except AgentGone as exc:
        raise (on_gone(str(exc)) if on_gone else
               AgentDied(f"the agent of sandbox {sandbox_id} is gone ({exc}); "
                         "reset or restart the sandbox")) from None
    except TimeoutError:
        raise CommandTimeout(f"sandbox {sandbox_id} did not answer {op} within {timeout} s") from None
