"""The RL algorithms on small tensors whose answers are worked out by hand in the comments, and
the GRPO loss and advantages against TRL's own code on the same batch."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tumbler.train.algorithms import (
    aggregate,
    compute_advantages,
    entropy_from_logits,
    gae,
    importance_weights,
    kl_loss,
    kl_penalty,
    kl_reward_penalty,
    policy_loss,
    reinforce_pp_token_advantages,
    value_loss,
    whiten,
)


def t(*rows, dtype=torch.float64):
    return torch.tensor(rows[0] if len(rows) == 1 else list(rows), dtype=dtype)


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), atol=tol, rtol=0)


# ---------------------------------------------------------------------------------------- advantages
# Group 0 = [1, 0, 0, 0]: mean 0.25, unbiased var (0.75^2 + 3 * 0.25^2) / 3 = 0.25, std 0.5.
# Group 1 = [2, 2]: std 0. Group 2 = [5]: a group of one.
REWARDS = t([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 5.0])
GROUPS = torch.tensor([0, 0, 0, 0, 1, 1, 2])


def test_grpo_normalises_by_the_group_std_and_zeroes_flat_groups():
    adv = compute_advantages(REWARDS, GROUPS, "grpo", std_eps=1e-6)
    # (1 - 0.25) / 0.5 = 1.5; (0 - 0.25) / 0.5 = -0.5; flat group and singleton give 0.
    close(adv, [1.5, -0.5, -0.5, -0.5, 0, 0, 0], tol=1e-5)
    assert adv.dtype == REWARDS.dtype


def test_grpo_std_eps_enters_the_denominator():
    # TRL's 1e-4: 0.75 / (0.5 + 1e-4).
    adv = compute_advantages(REWARDS, GROUPS, "grpo", std_eps=1e-4)
    close(adv[:2], [0.75 / 0.5001, -0.25 / 0.5001], tol=1e-9)


def test_grpo_group_ids_need_not_be_contiguous_or_sorted():
    # Group 7 = [3, 1, 5]: mean 3, unbiased var (0 + 4 + 4) / 2 = 4, std 2 -> [0, -1, 1].
    # Group 3 = [0, 4]: mean 2, std 2 sqrt(2) -> [-1/sqrt(2), 1/sqrt(2)].
    adv = compute_advantages(t([3.0, 0.0, 1.0, 4.0, 5.0]), torch.tensor([7, 3, 7, 3, 7]), "grpo", std_eps=0.0)
    s = math.sqrt(2)
    close(adv, [0, -1 / s, -1, 1 / s, 1])


def test_dr_grpo_and_norm_std_false_only_centre():
    expected = [0.75, -0.25, -0.25, -0.25, 0, 0, 0]
    close(compute_advantages(REWARDS, GROUPS, "dr_grpo"), expected)
    close(compute_advantages(REWARDS, GROUPS, "grpo", norm_std=False), expected)


def test_rloo_uses_the_mean_of_the_others():
    # 1 - mean(0, 0, 0) = 1; 0 - mean(1, 0, 0) = -1/3; [2, 2] -> 0; a group of one has no others -> 0.
    close(compute_advantages(REWARDS, GROUPS, "rloo"), [1, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0])


def test_reinforce_pp_whitens_over_the_batch_ignoring_groups():
    # [1, 2, 3, 6]: mean 3, unbiased var (4 + 1 + 0 + 9) / 3 = 14/3.
    adv = compute_advantages(t([1.0, 2.0, 3.0, 6.0]), torch.tensor([0, 0, 1, 1]), "reinforce_pp")
    close(adv, [(r - 3) / math.sqrt(14 / 3 + 1e-8) for r in (1, 2, 3, 6)])
    assert compute_advantages(t([4.0]), torch.tensor([0]), "reinforce_pp").item() == 0.0


def test_reinforce_pp_baseline_subtracts_the_group_mean_then_whitens():
    # Centred [-1, 1, 0, 0]; batch mean 0, unbiased var 2/3.
    adv = compute_advantages(t([1.0, 3.0, 10.0, 10.0]), torch.tensor([0, 0, 1, 1]), "reinforce_pp_baseline")
    close(adv, [-1 / math.sqrt(2 / 3), 1 / math.sqrt(2 / 3), 0, 0])


def test_reinforce_pp_token_form_weights_sequences_by_length():
    # Returns (gamma 1): row 0 [1, 1, 1], row 1 [2, 2, -]; valid values [1, 1, 1, 2, 2]:
    # mean 1.4, unbiased var (3 * 0.16 + 2 * 0.36) / 4 = 0.3.
    rewards = t([0.0, 0.0, 1.0], [0.0, 2.0, 0.0])
    mask = t([1, 1, 1], [1, 1, 0])
    adv, ret = reinforce_pp_token_advantages(rewards, mask)
    close(ret, [[1, 1, 1], [2, 2, 0]])
    s = math.sqrt(0.3 + 1e-8)
    close(adv, [[-0.4 / s] * 3, [0.6 / s, 0.6 / s, 0]])


def test_unknown_estimator_is_named():
    with pytest.raises(ValueError, match="'ppo'"):
        compute_advantages(REWARDS, GROUPS, "ppo")


def test_gae_skips_observation_tokens():
    # mask [1, 0, 1]: the middle token is an observation, so the chain is t=0 -> t=2.
    # t=2: delta = 1 + 0 - 0.2 = 0.8, A = 0.8.
    # t=0: delta = 0 + 0.9 * 0.2 - 0.5 = -0.32, A = -0.32 + 0.9 * 0.8 * 0.8 = 0.256.
    adv, ret = gae(t([[0.0, 0.0, 1.0]]), t([[0.5, 9.0, 0.2]]), t([[1, 0, 1]]), gamma=0.9, lam=0.8)
    close(adv, [[0.256, 0, 0.8]])
    close(ret, [[0.756, 0, 1.0]])


def test_gae_with_lambda_one_gives_discounted_return_minus_value():
    # gamma 1, lam 1: A_t = sum of later rewards - V_t = 1 - V_t.
    adv, ret = gae(t([[0.0, 0.0, 1.0]]), t([[0.1, 0.2, 0.3]]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    close(adv, [[0.9, 0.8, 0.7]])
    close(ret, [[1.0, 1.0, 1.0]])


def test_whiten_ignores_masked_entries():
    # Valid [1, 2, 3]: mean 2, unbiased var 1; the 100 is outside the mask.
    out = whiten(t([[1.0, 2.0, 3.0, 100.0]]), t([[1, 1, 1, 0]]))
    close(out, [[-1 / math.sqrt(1 + 1e-8), 0, 1 / math.sqrt(1 + 1e-8), 0]])


# --------------------------------------------------------------------------------------- aggregation
LOSS = t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0])
MASK = t([1, 1, 0], [1, 0, 0], [0, 0, 0])  # row 2 has no valid token


@pytest.mark.parametrize("mode, scale, expected", [
    ("token-mean", None, 7 / 3),                  # (1 + 2 + 4) / 3 tokens
    ("seq-mean-token-mean", None, 2.75),          # (3/2 + 4/1) / 2 rows (row 2 left out)
    ("seq-mean-token-sum", None, 3.5),            # (3 + 4) / 2 rows
    ("seq-mean-token-sum-norm", None, 3.5 / 3),   # / T = 3
    ("seq-mean-token-sum-norm", 7.0, 0.5),        # / scale
])
def test_aggregation_modes(mode, scale, expected):
    close(aggregate(LOSS, MASK, mode, scale), expected)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
def test_aggregation_of_an_all_masked_batch_is_zero(mode):
    assert aggregate(LOSS, torch.zeros_like(MASK), mode).item() == 0.0


def test_aggregation_rejects_a_stray_scale_and_an_unknown_mode():
    with pytest.raises(ValueError, match="scale"):
        aggregate(LOSS, MASK, "token-mean", scale=2.0)
    with pytest.raises(ValueError, match="'sum'"):
        aggregate(LOSS, MASK, "sum")


# ------------------------------------------------------------------------------------------------ KL
def test_kl_forms():
    # d = logp - ref = [1, -1]. k3 = exp(-d) + d - 1 = [e^-1, e - 2].
    logp, ref = t([[0.0, -1.0]]), t([[-1.0, 0.0]])
    close(kl_penalty(logp, ref, "k1"), [[1, -1]])
    close(kl_penalty(logp, ref, "abs"), [[1, 1]])
    close(kl_penalty(logp, ref, "k2"), [[0.5, 0.5]])
    close(kl_penalty(logp, ref, "k3"), [[math.exp(-1), math.e - 2]])
    close(kl_penalty(logp, ref, "low_var_kl"), [[math.exp(-1), math.e - 2]])


def test_k3_clamps_as_verl_and_not_as_trl():
    # d = -30: unclamped exp(30) - 31; d = +30: exp(-30) + 29. verl clamps both results to 10.
    logp, ref = t([[-30.0, 0.0]]), t([[0.0, -30.0]])
    close(kl_penalty(logp, ref, "k3", clamp=True), [[10, 10]])
    unclamped = kl_penalty(logp, ref, "k3", clamp=False)
    assert unclamped[0, 0].item() == pytest.approx(math.exp(30) - 31, rel=1e-12)
    assert unclamped[0, 1].item() == pytest.approx(29 + math.exp(-30), rel=1e-12)


def test_kl_as_loss_and_as_reward_penalty():
    logp, ref, mask = t([[0.0, -1.0, 5.0]]), t([[-1.0, 0.0, 0.0]]), t([[1, 1, 0]])
    # k1 over the two valid tokens: (1 - 1) / 2 = 0; k2: (0.5 + 0.5) / 2 = 0.5.
    close(kl_loss(logp, ref, mask, "k1"), 0.0)
    close(kl_loss(logp, ref, mask, "k2"), 0.5)
    # TRL's bias correction weights each token's k3 by rho: old = logp - ln 2 gives rho = 2 on both,
    # so the token mean of [e^-1, e - 2] doubles.
    close(kl_loss(logp, ref, mask, "k3", old_logprobs=logp - math.log(2)), math.exp(-1) + math.e - 2)
    # reward penalty: r - 0.1 * k1 on valid tokens; the masked third token is not penalised.
    rewards, kl = kl_reward_penalty(t([[0.0, 0.0, 1.0]]), logp, ref, mask, coef=0.1)
    close(rewards, [[-0.1, 0.1, 1.0]])
    close(kl, [[1, -1, 0]])
    with pytest.raises(ValueError, match="'k9'"):
        kl_penalty(logp, ref, "k9")


# ----------------------------------------------------------------------------------------- the loss
# One row, four tokens, old log-prob 0, ratios [1.5, 0.5, 0.5, 1.5], advantages [+1, +1, -1, -1].
RATIOS = t([[1.5, 0.5, 0.5, 1.5]])
ADV = t([[1.0, 1.0, -1.0, -1.0]])


def test_clipped_loss_by_hand():
    logp = RATIOS.log().requires_grad_()
    loss, m = policy_loss(logp, torch.zeros_like(logp), ADV, torch.ones_like(logp))
    # max(-A rho, -A clip(rho, 0.8, 1.2)): [max(-1.5, -1.2), max(-0.5, -0.8), max(0.5, 0.8), max(1.5, 1.2)]
    # = [-1.2, -0.5, 0.8, 1.5]; mean 0.15.
    close(loss, 0.15)
    assert m["clip_frac"] == 0.5                  # tokens 0 and 2 took the clipped term
    assert m["clip_frac_high"] == 0.25            # rho 1.5 > 1.2 with A > 0
    assert m["clip_frac_low"] == 0.25             # rho 0.5 < 0.8 with A < 0
    assert m["ratio_mean"] == pytest.approx(1.0) and m["ratio_max"] == pytest.approx(1.5)
    loss.backward()
    # Clipped tokens get no gradient; the others get d(-A rho)/d logp / 4 = -A rho / 4.
    close(logp.grad, [[0.0, -0.5 / 4, 0.0, 1.5 / 4]])


def test_clip_higher_raises_only_the_upper_bound():
    logp = RATIOS.log()
    # clip_high 0.6: token 0 is max(-1.5, -1.5) = -1.5; the rest unchanged: (-1.5 - 0.5 + 0.8 + 1.5) / 4.
    loss, m = policy_loss(logp, torch.zeros_like(logp), ADV, torch.ones_like(logp), clip_high=0.6)
    close(loss, 0.075)
    assert m["clip_frac_high"] == 0.0


def test_dual_clip_bounds_negative_advantages_only():
    # ratios [5, 1.5, 5], A [-1, -1, +1]. Without dual clip: [max(5, 1.2), max(1.5, 1.2), max(-5, -1.2)]
    # = [5, 1.5, -1.2]. With c = 3 the A < 0 tokens take min(L, 3): [3, 1.5, -1.2].
    logp = t([[5.0, 1.5, 5.0]]).log()
    adv = t([[-1.0, -1.0, 1.0]])
    ones = torch.ones_like(logp)
    plain, _ = policy_loss(logp, torch.zeros_like(logp), adv, ones)
    dual, m = policy_loss(logp, torch.zeros_like(logp), adv, ones, dual_clip=3.0)
    close(plain, 5.3 / 3)
    close(dual, 3.3 / 3)
    assert m["dual_clip_frac"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(logp, torch.zeros_like(logp), adv, ones, dual_clip=0.5)


def test_sequence_advantages_broadcast_and_masked_tokens_do_not_count():
    logp = t([[0.1, -0.2, 50.0], [0.3, 0.0, 0.0]])
    old = torch.zeros_like(logp)
    mask = t([[1, 1, 0], [1, 1, 1]])
    per_seq, _ = policy_loss(logp, old, t([2.0, -1.0]), mask, agg="seq-mean-token-mean")
    per_tok, _ = policy_loss(logp, old, t([[2.0] * 3, [-1.0] * 3]), mask, agg="seq-mean-token-mean")
    close(per_seq, per_tok)
    # The masked log-ratio of 50 is clamped to 20 (finite) and then left out.
    assert torch.isfinite(per_seq)
    # Masking the third column equals cutting it off.
    cut, _ = policy_loss(logp[:, :2], old[:, :2], t([2.0, -1.0]), torch.ones(2, 2), agg="token-mean")
    masked, _ = policy_loss(logp, old, t([2.0, -1.0]), t([[1, 1, 0], [1, 1, 0]]), agg="token-mean")
    close(cut, masked)


def test_importance_weights_scale_the_per_token_loss():
    logp = RATIOS.log()
    w = t([[2.0, 1.0, 1.0, 0.0]])
    # [-1.2 * 2, -0.5, 0.8, 1.5 * 0] / 4 = -2.1 / 4.
    loss, _ = policy_loss(logp, torch.zeros_like(logp), ADV, torch.ones_like(logp), is_weights=w)
    close(loss, -2.1 / 4)


def test_log_ratio_is_clamped_at_20():
    _, m = policy_loss(t([[100.0]]), t([[0.0]]), t([1.0]), t([[1]]))
    assert m["ratio_max"] == pytest.approx(math.exp(20))


# --------------------------------------------------------------------------------- importance weights
# old - sampler = [1, 0, -1] -> w = [e, 1, 1/e].
OLD, SAMPLER = t([[0.0, 0.0, 0.0]]), t([[-1.0, 0.0, 1.0]])


@pytest.mark.parametrize("mode, low, high, expected", [
    ("truncate", None, 2.0, [2.0, 1.0, math.exp(-1)]),
    ("truncate", 0.5, 2.0, [2.0, 1.0, 0.5]),
    ("truncate", None, None, [math.e, 1.0, math.exp(-1)]),
    ("mask", None, 2.0, [0.0, 1.0, math.exp(-1)]),
    ("mask", 0.5, 2.0, [0.0, 1.0, 0.0]),
])
def test_token_importance_weights(mode, low, high, expected):
    w = importance_weights(OLD, SAMPLER, torch.ones_like(OLD), "token", mode, low, high)
    close(w, [expected])


def test_sequence_importance_weights_use_the_masked_sum():
    # Mask [1, 1, 0]: the sum of differences is 1 + 0 = 1, so every token gets e before the bounds.
    mask = t([[1, 1, 0]])
    close(importance_weights(OLD, SAMPLER, mask, "sequence", "truncate", high=None), [[math.e] * 3])
    close(importance_weights(OLD, SAMPLER, mask, "sequence", "truncate", high=2.0), [[2.0] * 3])
    close(importance_weights(OLD, SAMPLER, mask, "sequence", "mask", high=2.0), [[0.0] * 3])


def test_importance_weights_treat_unknown_sampler_logprobs_as_no_correction():
    w = importance_weights(OLD, t([[float("nan"), 0.0, 1.0]]), torch.ones_like(OLD), high=None)
    close(w, [[1.0, 1.0, math.exp(-1)]])


# --------------------------------------------------------------------------------- entropy and value
def test_entropy_from_logits():
    logits = t([[[0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, -1000.0, -1000.0]]])
    close(entropy_from_logits(logits), [[math.log(4), math.log(2)]])
    # A -inf logit (a banned token) contributes 0, not NaN.
    close(entropy_from_logits(t([[[0.0, float("-inf")]]])), [[0.0]])
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(2, 3, 11, generator=g, dtype=torch.float64) * 5
    close(entropy_from_logits(rand), torch.distributions.Categorical(logits=rand).entropy(), tol=1e-10)
    assert entropy_from_logits(rand.to(torch.bfloat16)).dtype == torch.float32


def test_value_loss_clipped_and_plain():
    values, old, returns, mask = t([[1.0, 2.0, 9.0]]), t([[0.0, 2.0, 0.0]]), t([[2.0, 0.0, 0.0]]), t([[1, 1, 0]])
    # token 0: (1-2)^2 = 1, clipped V = 0 + 0.5 -> (0.5-2)^2 = 2.25 -> 2.25; token 1: 4 both ways.
    # 0.5 * mean(2.25, 4) = 1.5625; plain: 0.5 * mean(1, 4) = 1.25.
    loss, m = value_loss(values, old, returns, mask, clip=0.5)
    close(loss, 1.5625)
    assert m["vf_clip_frac"] == 0.5
    close(value_loss(values, old, returns, mask)[0], 1.25)


# ------------------------------------------------------------------------------------- TRL parity
MAX_COMPLETION = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer random Llama and a word-level tokenizer built here (no hub). The model is also
    saved to disk: with beta != 0 TRL loads its reference model from the policy's path."""
    pytest.importorskip("trl")  # the dev extra pins it; the hand-computed tests above run without it
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(29)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                      pad_token_id=0, bos_token_id=1, eos_token_id=1)
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    model.config._name_or_path = str(path)
    return model, tok


def make_trainer(tiny, tmp_path, reward_fn=None, **config):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    model, tok = tiny
    args = GRPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
                      max_completion_length=MAX_COMPLETION, **config)
    return GRPOTrainer(model=model, reward_funcs=reward_fn or (lambda completions, **kw: [0.0] * len(completions)),
                       args=args, train_dataset=Dataset.from_dict({"prompt": ["w1 w2"] * 8}),
                       processing_class=tok)


def parity_batch(vocab_size):
    """Prompts, completions of different lengths (no fully masked row), advantages, and old/ref
    log-probs that are the current ones plus noise, so that some ratios fall outside the clip."""
    g = torch.Generator().manual_seed(1)
    b = 4
    prompt_ids = torch.randint(3, vocab_size, (b, 3), generator=g)
    completion_ids = torch.randint(3, vocab_size, (b, MAX_COMPLETION), generator=g)
    lengths = torch.tensor([6, 2, 4, 1])
    completion_mask = (torch.arange(MAX_COMPLETION)[None, :] < lengths[:, None]).long()
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([1.3, -0.7, 0.4, -1.1]),
        "num_items_in_batch": completion_mask.sum(),
        "noise_old": torch.randn(b, MAX_COMPLETION, generator=g) * 0.4,
        "noise_ref": torch.randn(b, MAX_COMPLETION, generator=g) * 0.4,
    }


OUR_AGG = {"grpo": "seq-mean-token-mean", "bnpo": "token-mean", "dapo": "token-mean",
           "dr_grpo": "seq-mean-token-sum-norm"}


@pytest.mark.parametrize("loss_type", list(OUR_AGG))
@pytest.mark.parametrize("beta, epsilon_high, bias_corrected_kl", [
    (0.0, None, False), (0.04, 0.28, False), (0.04, None, True)])
def test_loss_and_gradient_match_trl(tiny, tmp_path, loss_type, beta, epsilon_high, bias_corrected_kl):
    trainer = make_trainer(tiny, tmp_path, loss_type=loss_type, beta=beta, epsilon=0.2,
                           epsilon_high=epsilon_high, use_bias_correction_kl=bias_corrected_kl,
                           per_device_train_batch_size=4, num_generations=2)
    model = trainer.model
    # Eval mode: TRL then divides by no gradient-accumulation count (its train-time scaling
    # belongs to the trainer loop, not to the loss formula).
    model.eval()
    batch = parity_batch(model.config.vocab_size)
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)

    def logps():
        return trainer._get_per_token_logps_and_entropies(model, input_ids, attention, MAX_COMPLETION)[0]

    with torch.no_grad():
        current = logps()
    inputs = {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask",
                                    "advantages", "num_items_in_batch")}
    inputs["old_per_token_logps"] = current + batch["noise_old"]
    if beta:
        inputs["ref_per_token_logps"] = current + batch["noise_ref"]

    model.zero_grad()
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    lp = logps()
    mask = batch["completion_mask"]
    agg = OUR_AGG[loss_type]
    scale = MAX_COMPLETION if agg == "seq-mean-token-sum-norm" else None
    ours, metrics = policy_loss(lp, inputs["old_per_token_logps"], batch["advantages"], mask, clip_low=0.2,
                                clip_high=epsilon_high or 0.2, agg=agg, scale=scale)
    if beta:
        # TRL's k3 is unclamped: clamp=False; its bias correction weights it by rho.
        old = inputs["old_per_token_logps"] if bias_corrected_kl else None
        ours = ours + beta * kl_loss(lp, inputs["ref_per_token_logps"], mask, "k3", agg, clamp=False, scale=scale,
                                     old_logprobs=old)
    ours.backward()

    # The batch must exercise the clip, or the parity would not cover it.
    assert 0 < metrics["clip_frac"] < 1
    close(ours.detach(), trl_loss.detach())
    for ours_g, trl_g in zip((p.grad for p in model.parameters()), trl_grads):
        close(ours_g, trl_g)


def test_advantages_match_trl(tiny, tmp_path):
    """TRL's own scoring path on generated completions, with rewards we choose per completion."""
    rewards = [1.0, 0.0, 0.0, 0.0,   0.5, 0.5, 0.5, 0.5,   0.2, 0.9, 0.4, 0.1]

    def reward_fn(completions, **kw):
        return rewards[: len(completions)]

    results = {}
    for scale in ("group", "none"):
        trainer = make_trainer(tiny, tmp_path, reward_fn=reward_fn, per_device_train_batch_size=12,
                               num_generations=4, scale_rewards=scale)
        prompts = [{"prompt": p} for p in ("w1 w2", "w3 w4", "w5 w6") for _ in range(4)]
        results[scale] = trainer._generate_and_score_completions(prompts)["advantages"]
    r = torch.tensor(rewards)
    groups = torch.arange(3).repeat_interleave(4)
    close(compute_advantages(r, groups, "grpo", std_eps=1e-4), results["group"])
    close(compute_advantages(r, groups, "dr_grpo"), results["none"])
    # The flat group must really be in the batch: TRL gives it 0 as we do.
    assert torch.all(results["group"][4:8] == 0)
