"""Token-exact multi-turn chats rendered with the model's own chat template.

The first turn is the template's full render. Every later turn reuses the earlier prompt and
response ids verbatim and appends only the new turn's tokens: the template renders a dummy system
message followed by the new user message, and the dummy's tokens are cut off (ROLL's way). What
the template puts between an end-of-turn token and the next message (ChatML: a newline) is read
from the same dummy render, so the sequence equals the full render wherever the template is
prefix-stable and the response re-tokenises to itself.
"""
from __future__ import annotations

from tumbler.errors import InvalidRequest

DUMMY_SYSTEM = "dummy"


class ChatRenderer:
    """Renders turns for `tokenizer` (one with a chat template and an end-of-turn token)."""

    def __init__(self, tokenizer, eot_id: int, system_prompt: str | None = None,
                 first_template: str = "{obs}", turn_template: str = "{obs}"):
        """first_template/turn_template: the user message made of the first / a later
        observation (`{obs}` is replaced by it)."""
        for template in (first_template, turn_template):
            if "{obs}" not in template:
                raise InvalidRequest(f"observation template {template!r} has no {{obs}}")
        self.tokenizer, self.eot_id, self.system_prompt = tokenizer, eot_id, system_prompt
        self.first_template, self.turn_template = first_template, turn_template
        prefix = self._render([{"role": "system", "content": DUMMY_SYSTEM}], generation_prompt=False)
        if eot_id not in prefix:
            raise InvalidRequest("the chat template does not end a message with the end-of-turn "
                                 f"token {eot_id}; token-exact turns need it")
        self._dummy_prefix = prefix
        # tokens the template writes after a message's end-of-turn token, before the next one
        self.separator = prefix[len(prefix) - prefix[::-1].index(eot_id):]

    def first_turn(self, observation: str) -> list[int]:
        """The whole first prompt: system prompt (when set), the observation, the assistant cue."""
        messages = [{"role": "user", "content": self.first_template.replace("{obs}", observation)}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self._render(messages, generation_prompt=True)

    def next_turn(self, observation: str, response_stopped: bool) -> list[int]:
        """The tokens that follow a response: an end-of-turn token when the response was cut
        short without one, the separator, then the new user message and the assistant cue."""
        message = {"role": "user", "content": self.turn_template.replace("{obs}", observation)}
        return self.continuation([message], response_stopped)

    def continuation(self, messages: list[dict], response_stopped: bool) -> list[int]:
        """The tokens that follow a response when `messages` (user or tool messages, as an
        agent program sends them) come next, ending with the assistant cue."""
        ids = self._render([{"role": "system", "content": DUMMY_SYSTEM}, *messages],
                           generation_prompt=True)
        if ids[:len(self._dummy_prefix)] != self._dummy_prefix:
            raise InvalidRequest("the chat template is not prefix-stable for a dummy system message")
        closing = [] if response_stopped else [self.eot_id]
        return closing + self.separator + ids[len(self._dummy_prefix):]

    def full_render(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        """The template's render of a whole chat (an agent program's first call, or one that
        rewrote its history); `tools` are passed to the template when given."""
        return self._render(messages, generation_prompt=True, tools=tools)

    def _render(self, messages: list[dict], generation_prompt: bool, tools=None) -> list[int]:
        extra = {"tools": tools} if tools else {}
        return list(self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False,
            **extra))
