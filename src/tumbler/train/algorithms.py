"""RL algorithms as pure functions over tensors: advantages, the clipped policy loss, its
aggregation, KL to a reference, entropy, importance weights and the critic's loss.

Shapes: ``B`` sequences, ``T`` tokens (the response positions), ``V`` vocabulary entries.
``mask[B, T]`` is 1 on a token the policy generated and is trained on, 0 elsewhere (prompt,
observation, tool and padding tokens). Log-probs are natural logs (nats). Nothing here reads or
writes state: each function returns new tensors and a test can call it with hand-computed values.

The formulas follow verl's ``core_algos.py`` and TRL 1.16's ``GRPOTrainer._compute_loss``; where
the two differ the docstring says which one is followed and why.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "KL_KINDS",
    "aggregate",
    "compute_advantages",
    "entropy_from_logits",
    "gae",
    "importance_weights",
    "kl_loss",
    "kl_penalty",
    "kl_reward_penalty",
    "policy_loss",
    "reinforce_pp_token_advantages",
    "value_loss",
    "whiten",
]

ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_KINDS = ("k1", "abs", "k2", "k3", "low_var_kl")

# verl's masked_whiten adds this to the variance (not the std) before the square root.
_WHITEN_VAR_EPS = 1e-8
# verl and ROLL clamp log-ratios here so exp() cannot overflow to inf on a far-off token.
_LOG_RATIO_CLAMP = 20.0
# verl clamps the k3 estimate itself to +-10 (a single token cannot dominate the KL term).
_K3_CLAMP = 10.0


def _group_stats(rewards: Tensor, group_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group size, group mean and unbiased group std (0 for a group of one)."""
    groups, inverse = torch.unique(group_index, return_inverse=True)
    r = rewards.to(torch.float64)
    count = torch.zeros(len(groups), dtype=torch.float64, device=rewards.device).index_add_(
        0, inverse, torch.ones_like(r)
    )
    total = torch.zeros_like(count).index_add_(0, inverse, r)
    mean = total / count
    sq_dev = torch.zeros_like(count).index_add_(0, inverse, (r - mean[inverse]) ** 2)
    var = torch.where(count > 1, sq_dev / (count - 1).clamp(min=1), torch.zeros_like(count))
    return count[inverse], mean[inverse], var.sqrt()[inverse]


def compute_advantages(
    rewards: Tensor,
    group_index: Tensor,
    estimator: str = "grpo",
    std_eps: float = 1e-6,
    norm_std: bool = True,
) -> Tensor:
    """One advantage per sequence from its scalar reward and its group (same prompt/seed).

    ``rewards[B]`` float, ``group_index[B]`` long (any ids; samples with equal ids form a group).
    Statistics are computed in float64 and the result is returned in ``rewards.dtype``.

    - ``"grpo"``: ``A_i = (r_i - mean_g) / (std_g + std_eps)`` with the unbiased (Bessel) std of
      the group. A group of one, or a group with ``std_g <= std_eps``, gives ``A = 0`` (ROLL's
      rule: such a group carries no ranking signal). verl gives a group of one ``A = r`` (mean 0,
      std 1) instead; TRL divides by ``std + 1e-4`` with no ``<= eps`` cut, which only differs
      from this when ``0 < std <= eps``. ``std_eps=1e-4`` reproduces TRL's default.
      ``norm_std=False`` skips the division (= ``"dr_grpo"``).
    - ``"dr_grpo"``: ``A_i = r_i - mean_g`` (Dr. GRPO: no std, which biases toward easy/hard
      prompts otherwise).
    - ``"rloo"``: leave-one-out baseline ``A_i = r_i - (sum_g r - r_i) / (n_g - 1)``
      ``= n_g / (n_g - 1) * (r_i - mean_g)``; a group of one gives 0.
    - ``"reinforce_pp"``: REINFORCE++ (verl ``compute_reinforce_plus_plus_outcome_advantage``,
      gamma 1, outcome reward): the return is whitened over the *batch*, ignoring groups:
      ``A_i = (r_i - mean_B) / sqrt(var_B + 1e-8)`` with the unbiased batch variance; a batch
      of one gives 0. verl whitens the per-token returns over every valid token, i.e. each
      sequence weighted by its length; here each sequence counts once (this API has no mask).
      :func:`reinforce_pp_token_advantages` is the token-weighted verl form.
      ``norm_std=False`` leaves ``r_i - mean_B``.
    - ``"reinforce_pp_baseline"``: REINFORCE++-baseline (verl
      ``compute_reinforce_plus_plus_baseline_outcome_advantage``): subtract the group mean, then
      whiten over the batch as above.
    """
    if rewards.dim() != 1 or group_index.shape != rewards.shape:
        raise ValueError(f"rewards and group_index must both be [B]; got {tuple(rewards.shape)} "
                         f"and {tuple(group_index.shape)}")
    r = rewards.to(torch.float64)
    count, mean, std = _group_stats(rewards, group_index)
    if estimator in ("grpo", "dr_grpo"):
        centred = r - mean
        if estimator == "grpo" and norm_std:
            flat = (count < 2) | (std <= std_eps)
            adv = torch.where(flat, torch.zeros_like(r), centred / (std + std_eps))
        else:
            adv = torch.where(count < 2, torch.zeros_like(r), centred)
    elif estimator == "rloo":
        adv = torch.where(count < 2, torch.zeros_like(r), count / (count - 1).clamp(min=1) * (r - mean))
    elif estimator in ("reinforce_pp", "reinforce_pp_baseline"):
        base = r - mean if estimator == "reinforce_pp_baseline" else r
        if base.numel() < 2:
            adv = torch.zeros_like(r)
        else:
            adv = base - base.mean()
            if norm_std:
                adv = adv * torch.rsqrt(base.var(unbiased=True) + _WHITEN_VAR_EPS)
    else:
        raise ValueError(f"unknown advantage estimator {estimator!r}; expected one of {ADVANTAGE_ESTIMATORS}")
    return adv.to(rewards.dtype)


def _masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    m = mask.to(values.dtype)
    if dim is None:
        return (values * m).sum() / m.sum().clamp(min=1)
    return (values * m).sum(dim) / m.sum(dim).clamp(min=1)


def whiten(values: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Normalise ``values`` over the valid (``mask == 1``) entries, as verl's ``masked_whiten``:
    ``(v - mean_m) * rsqrt(var_m + 1e-8)`` with the unbiased masked variance; with
    ``shift_mean=False`` the mean is added back. Entries outside the mask come back 0. Fewer
    than two valid entries have no variance: the centred values (all 0) are returned.
    """
    m = mask.to(values.dtype)
    n = m.sum()
    mean = (values * m).sum() / n.clamp(min=1)
    centred = (values - mean) * m
    if n < 2:
        return centred if shift_mean else centred + mean * m
    var = (centred**2).sum() / (n - 1)
    out = centred * torch.rsqrt(var + _WHITEN_VAR_EPS)
    if not shift_mean:
        out = out + mean
    return out * m


def reinforce_pp_token_advantages(
    token_rewards: Tensor, mask: Tensor, gamma: float = 1.0
) -> tuple[Tensor, Tensor]:
    """verl's REINFORCE++ on per-token rewards: the discounted return
    ``G_t = r_t + gamma * G_{t+1}`` (reset after the last valid token of a row), then
    ``A = whiten(G, mask)`` over every valid token of the batch. Returns ``(A, G)``, both [B, T],
    0 outside the mask.
    """
    m = mask.to(token_rewards.dtype)
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        running = token_rewards[:, t] + gamma * running
        returns[:, t] = running
        running = running * m[:, t]
    return whiten(returns, mask), returns * m


def gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation for PPO with a critic (verl ``compute_gae_advantage_return``).

    Backwards over t, skipping masked (observation/prompt) tokens so that the generated tokens
    of all turns form one chain:
    ``delta_t = r_t + gamma * V_next - V_t``, ``A_t = delta_t + gamma * lam * A_next``, where
    ``V_next``/``A_next`` are those of the next *valid* token (0 after the last one).
    ``returns = A + V``. Both come back [B, T], 0 outside the mask, and *not* whitened (call
    :func:`whiten` on the advantages for verl's behaviour).
    """
    m = mask.to(values.dtype)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        # A masked token passes the next valid token's value and advantage through unchanged.
        next_value = values[:, t] * m[:, t] + (1 - m[:, t]) * next_value
        next_adv = adv_t * m[:, t] + (1 - m[:, t]) * next_adv
        advantages[:, t] = next_adv
    advantages = advantages * m
    returns = (advantages + values) * m
    return advantages, returns


def aggregate(values: Tensor, mask: Tensor, mode: str = "token-mean", scale: float | None = None) -> Tensor:
    """Reduce a per-token loss ``values[B, T]`` to a scalar, counting only ``mask == 1`` tokens.

    With ``n_i = sum_t m_it`` and ``S`` the rows with ``n_i > 0`` (rows with no valid token are
    left out of every sequence count):

    - ``"token-mean"``: ``sum(L m) / max(sum m, 1)`` (TRL ``bnpo``/``dapo``, verl's default).
      ROLL divides by all tokens, mask ignored; that trap is not reproduced.
    - ``"seq-mean-token-mean"``: ``mean_{i in S} sum_t(L m)_i / n_i`` (TRL ``grpo``, ROLL's default).
    - ``"seq-mean-token-sum"``: ``mean_{i in S} sum_t(L m)_i``.
    - ``"seq-mean-token-sum-norm"``: ``seq-mean-token-sum / scale``, ``scale`` defaulting to ``T``
      (Dr. GRPO; TRL ``dr_grpo`` with ``scale = max_completion_length``; TRL divides by all rows,
      fully-masked ones included).

    ``scale`` is only accepted for the last mode. A batch with no valid token gives 0.
    """
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values and mask must both be [B, T]; got {tuple(values.shape)} and {tuple(mask.shape)}")
    if scale is not None and mode != "seq-mean-token-sum-norm":
        raise ValueError(f"scale applies only to 'seq-mean-token-sum-norm', not {mode!r}")
    m = mask.to(values.dtype)
    masked = values * m
    if mode == "token-mean":
        return masked.sum() / m.sum().clamp(min=1)
    tokens = m.sum(-1)
    rows = (tokens > 0).to(values.dtype)
    n_rows = rows.sum().clamp(min=1)
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / tokens.clamp(min=1) * rows).sum() / n_rows
    if mode == "seq-mean-token-sum":
        return (masked.sum(-1) * rows).sum() / n_rows
    if mode == "seq-mean-token-sum-norm":
        return (masked.sum(-1) * rows).sum() / n_rows / (values.shape[1] if scale is None else scale)
    raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGG_MODES}")


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    is_weights: Tensor | None = None,
    scale: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The clipped PPO/GRPO surrogate, aggregated to a scalar.

    ``rho = exp(clamp(logp - old_logp, -20, 20))`` and, per token,
    ``L1 = max(-A rho, -A clip(rho, 1 - clip_low, 1 + clip_high))`` (separate bounds: DAPO's
    clip-higher). With ``dual_clip = c`` (> 1), tokens with ``A < 0`` take ``min(L1, -A c)``
    (verl's dual clip, Ye et al. 2020); ``None`` turns it off (verl always has it on, c = 3;
    TRL has none). ``is_weights[B, T]`` (from :func:`importance_weights`, no gradient) multiply
    the per-token loss, as TRL's vLLM correction does. Then ``aggregate(L, mask, agg, scale)``.

    ``advantages`` is [B] (one per sequence) or [B, T]. Returns ``(loss, metrics)``; metrics
    are python floats over valid tokens: ``clip_frac`` (tokens whose clipped term was taken),
    ``clip_frac_low``/``clip_frac_high`` (TRL's: rho below 1 - clip_low with A < 0 / above
    1 + clip_high with A > 0), ``dual_clip_frac``, ``approx_kl`` (mean of ``old - logp``, verl's
    ``ppo_kl``), ``approx_kl_k3``, ``ratio_mean``, ``ratio_min``, ``ratio_max`` (1.0 with no valid token),
    ``pg_loss``; copied to the host in one transfer.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1.0 (it bounds -A * c for A < 0); got {dual_clip}")
    log_ratio = torch.clamp(logprobs - old_logprobs, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(loss_unclipped, loss_clipped)
    dual_taken = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip is not None:
        dual_bound = -advantages * dual_clip
        dual_taken = (advantages < 0) & (per_token > dual_bound)
        per_token = torch.where(advantages < 0, torch.minimum(per_token, dual_bound), per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()
    loss = aggregate(per_token, mask, agg, scale)

    with torch.no_grad():
        valid = mask.bool()
        adv = advantages.expand_as(ratio)
        lr = log_ratio.detach()
        r = ratio.detach()
        inf = torch.tensor(float("inf"), dtype=r.dtype, device=r.device)
        stats = {
            "pg_loss": loss.detach().to(r.dtype),
            "clip_frac": _masked_mean((loss_clipped > loss_unclipped).to(r.dtype), mask),
            "clip_frac_low": _masked_mean(((r < 1 - clip_low) & (adv < 0)).to(r.dtype), mask),
            "clip_frac_high": _masked_mean(((r > 1 + clip_high) & (adv > 0)).to(r.dtype), mask),
            "dual_clip_frac": _masked_mean(dual_taken.to(r.dtype), mask),
            "approx_kl": _masked_mean(-lr, mask),
            "approx_kl_k3": _masked_mean(torch.exp(-lr) + lr - 1, mask),
            "ratio_mean": _masked_mean(r, mask),
            "ratio_min": torch.where(valid, r, inf).min(),
            "ratio_max": torch.where(valid, r, -inf).max(),
        }
        # One device-to-host copy for all metrics, not one sync each.
        values = torch.stack(list(stats.values())).tolist()
        metrics = {k: (v if math.isfinite(v) else 1.0) for k, v in zip(stats, values)}
    return loss, metrics


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3", clamp: bool = True) -> Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs, [B, T].

    With ``d = logp - ref_logp``:
    - ``"k1"``: ``d``; ``"abs"``: ``|d|``; ``"k2"``: ``0.5 d^2``;
    - ``"k3"`` / ``"low_var_kl"`` (Schulman's unbiased, non-negative estimator):
      ``exp(-d) + d - 1``. With ``clamp=True`` (verl) ``-d`` is clamped to +-20 and the result
      to +-10; ``clamp=False`` is TRL's unclamped k3.
    """
    diff = logprobs - ref_logprobs
    if kind == "k1":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "k2":
        return 0.5 * diff.square()
    if kind in ("k3", "low_var_kl"):
        neg = -diff
        if clamp:
            neg = torch.clamp(neg, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
        kl = torch.exp(neg) - neg - 1
        return torch.clamp(kl, -_K3_CLAMP, _K3_CLAMP) if clamp else kl
    raise ValueError(f"unknown KL kind {kind!r}; expected one of {KL_KINDS}")


def kl_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kind: str = "k3",
    agg: str = "token-mean",
    clamp: bool = True,
    scale: float | None = None,
    old_logprobs: Tensor | None = None,
) -> Tensor:
    """KL to the frozen reference as a loss term: ``aggregate(kl_penalty(...), mask, agg)``.
    Add ``beta * kl_loss(...)`` to the policy loss; with the same ``agg`` this equals TRL's
    ``per_token_loss + beta * per_token_kl`` aggregated (aggregation is linear).

    With ``old_logprobs`` the per-token KL is multiplied by ``rho = exp(clamp(logp - old, +-20))``
    (with its gradient): TRL 1.16's ``use_bias_correction_kl`` (its default), which makes the KL
    gradient unbiased when the samples came from the old policy (DeepSeek-V3.2). Without it: the
    plain estimator, as verl and TRL before 1.16.
    """
    kl = kl_penalty(logprobs, ref_logprobs, kind, clamp)
    if old_logprobs is not None:
        kl = kl * torch.exp(torch.clamp(logprobs - old_logprobs, -_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    return aggregate(kl, mask, agg, scale)


def kl_reward_penalty(
    token_rewards: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    coef: float,
    kind: str = "k1",
) -> tuple[Tensor, Tensor]:
    """KL as a reward penalty (verl ``apply_kl_penalty``): ``r'_t = r_t - coef * KL_t`` on valid
    tokens, computed without gradient. Returns ``(penalised token_rewards, KL[B, T])``; the KL
    is 0 outside the mask. Its default ``kind`` is k1, as in verl's and ROLL's reward penalty.
    """
    with torch.no_grad():
        kl = kl_penalty(logprobs, ref_logprobs, kind) * mask.to(logprobs.dtype)
    return token_rewards - coef * kl, kl


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax at each position, ``H = -sum_v p_v log p_v``, [B, T] from
    [B, T, V], in nats. Computed from ``log_softmax`` in at least float32 (stable for large
    logits and bf16 inputs); entries with ``p = 0`` (logit ``-inf``) contribute 0, not NaN.
    """
    work = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    logp = torch.log_softmax(work, dim=-1)
    p = logp.exp()
    return -(p * torch.where(p > 0, logp, torch.zeros_like(logp))).sum(-1)


def importance_weights(
    old_logprobs: Tensor,
    sampler_logprobs: Tensor,
    mask: Tensor,
    level: str = "token",
    mode: str = "truncate",
    low: float | None = None,
    high: float | None = 2.0,
) -> Tensor:
    """Truncated importance weights between the trainer's (``old``) and the sampler's log-probs,
    for when generation ran in another engine (vLLM) or with other weights. No gradient.

    ``w_t = exp(old_t - sampler_t)`` per token (``level="token"``), or
    ``w = exp(sum_t m_t (old_t - sampler_t))`` per sequence, broadcast over its tokens
    (``level="sequence"``). ``mode="truncate"`` clamps ``w`` to ``[low, high]`` (``None`` = no
    bound); ``mode="mask"`` sets ``w = 0`` outside ``[low, high]`` and keeps it inside. Masked
    positions and NaN sampler log-probs count as a zero difference (``w = 1`` before the bounds).
    As TRL 1.16's ``vllm_importance_sampling_mode``; its default upper bound is 3.0, ROLL's 1.2.
    Returns [B, T].
    """
    with torch.no_grad():
        diff = torch.nan_to_num((old_logprobs - sampler_logprobs) * mask.to(old_logprobs.dtype), nan=0.0)
        if level == "sequence":
            diff = diff.sum(-1, keepdim=True).expand_as(old_logprobs)
        elif level != "token":
            raise ValueError(f"unknown importance-sampling level {level!r}; expected 'token' or 'sequence'")
        w = torch.exp(diff)
        if mode == "truncate":
            return torch.clamp(w, min=low, max=high) if (low is not None or high is not None) else w
        if mode == "mask":
            outside = torch.zeros_like(w, dtype=torch.bool)
            if low is not None:
                outside |= w < low
            if high is not None:
                outside |= w > high
            return w.masked_fill(outside, 0.0)
        raise ValueError(f"unknown importance-sampling mode {mode!r}; expected 'truncate' or 'mask'")


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip: float | None = None,
    agg: str = "token-mean",
    scale: float | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The critic's loss (verl ``compute_value_loss``):
    ``0.5 * aggregate(max((V - R)^2, (V_clip - R)^2))`` with
    ``V_clip = old_V + clamp(V - old_V, -clip, clip)``; ``clip=None`` gives the plain
    ``0.5 * aggregate((V - R)^2)``. Returns ``(loss, {"vf_loss", "vf_clip_frac"})``.
    """
    err = (values - returns).square()
    if clip is None:
        per_token = err
        clipped_frac = 0.0
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err_clipped = (v_clipped - returns).square()
        per_token = torch.maximum(err, err_clipped)
        clipped_frac = float(_masked_mean((err_clipped > err).to(err.dtype).detach(), mask))
    loss = 0.5 * aggregate(per_token, mask, agg, scale)
    return loss, {"vf_loss": float(loss.detach()), "vf_clip_frac": clipped_frac}
