"""What a bridge delivers to its owner: calls to answer, and episodes and sandboxes that ended."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from tumbler.errors import Conflict
from tumbler.modelservice.completions import completion, error_body

if TYPE_CHECKING:
    from tumbler.modelservice.bridge import AsyncModelBridge


@dataclasses.dataclass
class ModelCall:
    """One chat completion an agent program is waiting on.

    request is the body the program sent in OpenAI's chat.completions shape, whichever API it
    called: api says which ("openai", or "anthropic" for a Messages API call, whose original
    body is native_request; the answer goes back as an Anthropic message). Answer it once with
    `respond` or `fail`. Both return whether the answer reached the program: False when the
    call expired, its episode ended or its sandbox went away first.
    """

    sandbox_id: str
    episode_id: str
    call_id: str
    request: dict
    stream: bool
    received: float                              # time.monotonic() when the bridge got it, seconds
    _bridge: "AsyncModelBridge" = dataclasses.field(repr=False, default=None)
    answered: bool = False
    api: str = "openai"
    native_request: dict | None = dataclasses.field(repr=False, default=None)

    @property
    def messages(self) -> list[dict]:
        return self.request["messages"]

    @property
    def params(self) -> dict[str, Any]:
        """The request's sampling parameters and the rest: everything but the messages."""
        return {k: v for k, v in self.request.items() if k != "messages"}

    async def respond(self, text: str | None = None, *, response: dict | None = None,
                      token_ids: list[int] | None = None, logprobs: list[float] | None = None,
                      tool_calls: list[dict] | None = None, finish_reason: str | None = None) -> bool:
        """Answer with text (and tool calls), or a whole chat.completion object as response.

        token_ids and logprobs (one per generated token) are recorded, not sent to the program.
        """
        if response is None:
            response = completion(text, model=self.request.get("model") or "policy",
                                     tool_calls=tool_calls, finish_reason=finish_reason,
                                     token_ids=token_ids)
        return await self._answer(200, response, token_ids, logprobs)

    async def fail(self, message: str, *, status: int = 500, kind: str = "server_error",
                   code: str | None = None) -> bool:
        """Answer with an OpenAI-style error (the program's client raises it)."""
        return await self._answer(status, error_body(message, kind, code), None, None)

    async def _answer(self, status: int, body: dict, token_ids, logprobs) -> bool:
        if self.answered:
            raise Conflict(f"call {self.call_id} of sandbox {self.sandbox_id} was answered already")
        self.answered = True
        return await self._bridge._answer(self, status, body, token_ids, logprobs)


@dataclasses.dataclass(frozen=True)
class EpisodeEnded:
    """An episode's agent program exited, was killed, or lost its sandbox.

    reason: "exited" (exit_code says how), "timeout" (killed at its time limit), "stopped"
    (the owner stopped it), "sandbox_gone" (the sandbox stopped or its agent died).
    """

    sandbox_id: str
    episode_id: str
    exit_code: int | None
    reason: str
    duration_s: float | None = None
    output: str = ""                             # the program's last 64 KiB of stdout+stderr


@dataclasses.dataclass(frozen=True)
class SandboxDetached:
    """The bridge no longer serves this sandbox: detached by the owner, stopped, or its agent died."""

    sandbox_id: str
    reason: str
