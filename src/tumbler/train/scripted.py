"""A policy that plays from a table, for tests: the reply to an episode's turn t is
`replies[t]` (a list of strings, the same for every episode) or `replies(episode, turn, prompt_ids)`.

It tokenises each reply and ends it with the end-of-turn token, as a model that stopped there
would; its log-probs are 0.0 (probability 1: it is deterministic)."""
from __future__ import annotations

from tumbler.train.policy import Generation, GenerationParams


class ScriptedPolicy:
    def __init__(self, tokenizer, replies):
        self.tokenizer = tokenizer
        self.eot_id = int(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eot_id
        self.replies = replies

    def open_batch(self, n: int) -> "ScriptedBatch":
        return ScriptedBatch(self, n)


class ScriptedBatch:
    def __init__(self, policy: ScriptedPolicy, n: int):
        self.policy, self.turns = policy, [0] * n
        self.fed: dict[int, list[int]] = {i: [] for i in range(n)}   # as HFBatch: what was seen

    def generate(self, prompts: dict[int, list[int]], params: GenerationParams) -> dict[int, Generation]:
        out = {}
        for ep, ids in prompts.items():
            turn = self.turns[ep]
            self.turns[ep] += 1
            replies = self.policy.replies
            text = replies(ep, turn, ids) if callable(replies) else replies[min(turn, len(replies) - 1)]
            tokens = self.policy.tokenizer(text, add_special_tokens=False).input_ids
            tokens = tokens[:params.max_new_tokens - 1] + [self.policy.eot_id]
            out[ep] = Generation(tokens, [0.0] * len(tokens), True, text)
            self.fed[ep] = ids + tokens[:-1]
        return out

    def close(self) -> None:
        """Nothing held."""
