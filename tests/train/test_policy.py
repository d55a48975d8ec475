"""Batched generation with a kept KV cache: exact tokens and the sampler's log-probs."""
import pytest
import torch

from tumbler.errors import Conflict, NotFound
from tumbler.train import models
from tumbler.train.policy import GenerationParams, HFPolicy


def chat(tokenizer, text):
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                              add_generation_prompt=True, return_dict=False))


def full_logprobs(policy, ids, start, temperature):
    t = torch.tensor([ids])
    logp, _ = policy.token_logprobs(t, torch.ones_like(t), temperature=temperature)
    return logp[0, start - 1:].tolist()


def test_batched_turns_match_each_row_alone(tiny_policy, tokenizer):
    """Rows of different lengths, left-padded, with finished rows masked mid-batch: every
    sampled token's log-prob equals the full forward of that row alone, turn after turn."""
    torch.manual_seed(1)
    params = GenerationParams(max_new_tokens=6, temperature=0.9)
    prompts = {i: chat(tokenizer, "guess " * (i + 1)) for i in range(3)}
    batch = tiny_policy.open_batch(3)
    outs = batch.generate(prompts, params)
    for i, out in outs.items():
        assert 1 <= len(out.token_ids) <= 6 and len(out.logprobs) == len(out.token_ids)
        got = full_logprobs(tiny_policy, prompts[i] + out.token_ids, len(prompts[i]), 0.9)
        assert got == pytest.approx(out.logprobs, abs=1e-4)
    # episode 1 ended; 0 and 2 go on with different new tokens, prefilled on their caches
    follow = tokenizer("\n<|im_start|>user\nlower<|im_end|>\n<|im_start|>assistant\n",
                       add_special_tokens=False).input_ids
    second = {i: prompts[i] + outs[i].token_ids + follow * (1 + i) for i in (0, 2)}
    outs2 = batch.generate(second, params)
    assert set(outs2) == {0, 2}
    for i, out in outs2.items():
        got = full_logprobs(tiny_policy, second[i] + out.token_ids, len(second[i]), 0.9)
        assert got == pytest.approx(out.logprobs, abs=1e-4)
    with pytest.raises(Conflict, match="does not extend"):
        batch.generate({0: prompts[2] + [5, 6]}, params)


def test_stops_at_end_of_turn_token(tiny_policy, tokenizer):
    """A model whose end-of-turn logit dominates stops after one token, marked stopped."""
    policy = HFPolicy.load("tiny", device="cpu", seed=0)
    head = torch.nn.Linear(policy.model.config.hidden_size, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[policy.eot_id] = 10.0    # every logit 0 but end-of-turn's
    policy.model.lm_head = head
    out = policy.open_batch(1).generate({0: chat(tokenizer, "hi")}, GenerationParams(max_new_tokens=5, temperature=0))
    assert out[0].token_ids[-1] == policy.eot_id and out[0].stopped


def test_missing_model_path_and_unreachable_hub_fail_at_once(monkeypatch):
    with pytest.raises(NotFound, match="does not exist"):
        models.resolve("/no/such/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotFound, match="hub"):
        models.resolve("someorg/some-model")
