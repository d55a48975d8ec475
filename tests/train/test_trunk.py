"""The frozen trunk kept from generation: the update runs only the trained layers and gets what
the whole model computes (log-probs and gradients), packed or not; multi-turn episodes."""
import pytest
import torch

from tumbler.train import packing
from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams, HFPolicy
from tumbler.train.rollout import EnvPool, rollout
from tumbler.train.samples import to_batch


@pytest.fixture
def kept_policy():
    """A fresh tiny policy (2 layers) training its top layer, keeping the layer below's output."""
    policy = HFPolicy.load("tiny", device="cpu", seed=1)
    policy.freeze_below(1)
    assert policy.keep_trunk() and policy.trunk_layer == 1
    return policy


def play(policy, reuse_cache=True):
    policy.reuse_cache = reuse_cache
    renderer = ChatRenderer(policy.tokenizer, policy.eot_id, "You play a game.")
    torch.manual_seed(3)
    seeds = [4, 4, 4, 9, 9, 9]
    with EnvPool.in_process("GuessTheNumber-v0", 6, low=1, high=4, max_turns=3) as envs:
        episodes, _ = rollout(policy, renderer, envs, seeds, [0, 0, 0, 1, 1, 1],
                              GenerationParams(max_new_tokens=6, temperature=1.0), max_turns=3)
    return episodes


def forward_backward(policy, batch, **kwargs):
    policy.model.zero_grad(set_to_none=True)
    positions = batch.loss_mask > 0
    logp, _ = policy.token_logprobs(batch.input_ids, batch.attention_mask, positions=positions, **kwargs)
    (logp * batch.loss_mask).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])
    return logp.detach(), grads


@pytest.mark.parametrize("reuse_cache", [True, False])
def test_the_kept_trunk_is_the_frozen_layers_output_at_every_fed_token(kept_policy, reuse_cache):
    episodes = play(kept_policy, reuse_cache)
    captured = {}
    hook = kept_policy.model.model.layers[1].register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(h=(args[0] if args else kwargs["hidden_states"])),
        with_kwargs=True)
    try:
        for ep in episodes:
            assert ep.trunk is not None and len(ep.trunk) <= len(ep.token_ids) - 1
            ids = torch.tensor([ep.token_ids[:len(ep.trunk)]])
            with torch.no_grad():
                kept_policy.model(input_ids=ids)
            assert torch.allclose(ep.trunk, captured["h"][0], atol=1e-4)
    finally:
        hook.remove()


def test_an_update_on_the_kept_trunk_equals_the_full_models(kept_policy):
    episodes = play(kept_policy)
    assert any(ep.turns > 1 for ep in episodes)
    batch = to_batch(episodes, kept_policy.pad_id)
    assert batch.trunk is not None and batch.trunk.shape[:2] == batch.loss_mask.shape
    full = forward_backward(kept_policy, batch)
    packed = packing.pack(batch.input_ids, batch.attention_mask, batch.loss_mask > 0, batch.group_index)
    assert packed.saved_tokens > 0
    for kwargs in ({"trunk": batch.trunk}, {"trunk": batch.trunk, "pack": packed}):
        logp, grads = forward_backward(kept_policy, batch, **kwargs)
        assert torch.allclose(logp, full[0], atol=1e-4)
        assert float((grads - full[1]).norm() / full[1].norm()) < 1e-4


def test_no_trunk_without_frozen_layers_or_with_lora():
    policy = HFPolicy.load("tiny", device="cpu", seed=1)
    assert not policy.keep_trunk()                # nothing frozen
    policy.freeze_below(1)
    policy.add_lora("tiny", r=2)
    assert not policy.keep_trunk()                # adapters in every layer: nothing stays fixed
    episodes = play(policy)
    assert all(ep.trunk is None for ep in episodes) and to_batch(episodes, policy.pad_id).trunk is None
