"""Token-exactness and masking: trained tokens are exactly the generated ones; the incremental
multi-turn sequence equals the template's full render (ChatML is prefix-stable)."""
from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams
from tumbler.train.rollout import EnvPool, rollout
from tumbler.train.samples import to_batch
from tumbler.train.scripted import ScriptedPolicy


def test_incremental_render_equals_full_render(tokenizer):
    policy = ScriptedPolicy(tokenizer, ["\\boxed{2}", "\\boxed{3}", "\\boxed{4}"])
    renderer = ChatRenderer(tokenizer, policy.eot_id, "You play a game.")
    with EnvPool.in_process("GuessTheNumber-v0", 1, low=1, high=4, max_turns=3) as envs:
        (ep,), _ = rollout(policy, renderer, envs, [0], [0], GenerationParams(max_new_tokens=8), max_turns=3)
    messages = [{"role": "system", "content": "You play a game."}] + ep.transcript
    full = renderer.full_render(messages[:-1]) if ep.done else None
    # the episode's sequence ends after the last response; the full render of the same chat
    # (without the final feedback) is that sequence plus the template's separator and cue
    assert full[:len(ep.token_ids)] == ep.token_ids
    assert ep.turns >= 1


def test_trained_tokens_are_exactly_the_generated_ones(tiny_policy, tokenizer):
    renderer = ChatRenderer(tokenizer, tiny_policy.eot_id)
    with EnvPool.in_process("GuessTheNumber-v0", 4, low=1, high=4, max_turns=3) as envs:
        episodes, stats = rollout(tiny_policy, renderer, envs, [5, 5, 6, 6], [0, 0, 1, 1],
                                  GenerationParams(max_new_tokens=5, temperature=1.0), max_turns=3)
    generated = sum(ep.mask.count(1) for ep in episodes)
    assert generated == stats.generated_tokens > 0
    batch = to_batch(episodes, tiny_policy.pad_id)
    for i, ep in enumerate(episodes):
        trained = [int(batch.input_ids[i, t + 1]) for t in range(batch.loss_mask.shape[1])
                   if batch.loss_mask[i, t] == 1]
        assert trained == [tok for tok, m in zip(ep.token_ids, ep.mask) if m]
        # each turn's response is a contiguous run of trained tokens after the assistant cue
        assert ep.mask[:len(renderer.first_turn("x")) - 1].count(1) == 0
        olds = [float(batch.old_logprobs[i, t]) for t in range(batch.loss_mask.shape[1])
                if batch.loss_mask[i, t] == 1]
        assert olds == [lp for lp, m in zip(ep.logprobs, ep.mask) if m]
        assert batch.rewards[i] == ep.reward
