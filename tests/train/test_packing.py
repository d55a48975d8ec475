"""Shared-prefix packing: the packed forward gives the unpacked rows' log-probs and gradients."""
import pytest
import torch

from tumbler.train import packing


def group_rows(prompts, tails):
    """Right-padded rows prompt[g] + tail for each (g, tail); trained: the tail's tokens."""
    rows = [(g, torch.cat([prompts[g], tail])) for g, tail in tails]
    width = max(len(r) for _, r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    attn = torch.zeros_like(ids)
    positions = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for i, (g, row) in enumerate(rows):
        ids[i, :len(row)], attn[i, :len(row)] = row, 1
        positions[i, len(prompts[g]) - 1:len(row) - 1] = True   # predicting the tail's tokens
    return ids, attn, positions, torch.tensor([g for g, _ in rows])


def logprobs_and_grads(policy, ids, attn, positions, pack=None):
    policy.model.zero_grad(set_to_none=True)
    logp, _ = policy.token_logprobs(ids, attn, positions=positions, pack=pack)
    (logp * torch.linspace(0.5, 1.5, logp.numel()).view_as(logp)).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.grad is not None])
    return logp.detach(), grads


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_batch_gives_the_rows_own_logprobs_and_gradients(tiny_policy, attention):
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(5, 500, (12,), generator=g), torch.randint(5, 500, (9,), generator=g)]
    same = torch.randint(5, 500, (4,), generator=g)
    tails = [(0, torch.randint(5, 500, (n,), generator=g)) for n in (3, 5, 1)] + [(0, same)]
    tails += [(1, same), (1, same)]           # a group of identical rows packs into its prefix
    ids, attn, positions, groups = group_rows(prompts, tails)
    before = tiny_policy.model.config._attn_implementation
    tiny_policy.model.config._attn_implementation = attention
    try:
        plain = logprobs_and_grads(tiny_policy, ids, attn, positions)
        packed = packing.pack(ids, attn, positions, groups)
        assert len(packed) == 2 and packed.saved_tokens == 3 * 12 + (9 + 4 - 1)
        got = logprobs_and_grads(tiny_policy, ids, attn, positions, pack=packed)
    finally:
        tiny_policy.model.config._attn_implementation = before
    assert torch.equal(got[0] == 0, plain[0] == 0)
    assert torch.allclose(got[0], plain[0], atol=1e-5)
    assert float((got[1] - plain[1]).norm() / plain[1].norm()) < 1e-5


def test_groups_with_little_in_common_stay_one_row_per_pack():
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 9, 8, 7, 6], [4, 4, 4, 0, 0]])
    attn = (torch.arange(5) < torch.tensor([[5], [5], [3]])).long()
    positions = torch.zeros((3, 4), dtype=torch.bool)
    positions[:, 1] = True
    packed = packing.pack(ids, attn, positions, torch.tensor([0, 0, 1]))
    assert len(packed) == 3 and packed.saved_tokens == 0
    # each trained token is read from its own row's slot
    assert packed.index.tolist() == [1, 4 + 1, 8 + 1]


def test_micro_batches_keep_groups_whole_where_they_fit():
    groups = torch.tensor([0, 1, 0, 1, 2, 2, 2, 3])
    got = [b.tolist() for b in packing.micro_batches(groups, 4)]
    assert got == [[0, 2, 1, 3], [4, 5, 6, 7]]
    assert [b.tolist() for b in packing.micro_batches(torch.tensor([5] * 5), 2)] == [[0, 1], [2, 3], [4]]
