"""The policy interface and its Hugging Face backend.

    policy = HFPolicy.load("smollm2")                    # or "tiny", a directory, a .gguf file
    batch = policy.open_batch(3)                         # 3 episodes, each with its own KV cache
    outs = batch.generate({0: ids0, 1: ids1, 2: ids2}, GenerationParams(max_new_tokens=16))
    # next turn: pass each live episode's whole token list again; only the tokens the cache has
    # not seen are prefilled (the earlier turns are never re-encoded)
    outs = batch.generate({0: ids0 + outs[0].token_ids + new_turn_ids}, params)

Generation runs every live episode's turn in one batch: the new tokens are left-padded into one
chunk, padding inside the cache is masked, and each row's position ids count only its real
tokens, so a row's numbers equal those of that row run alone. Sampling returns the exact token
ids and the sampler's log-probs (log-softmax of logits / temperature, before top-p filtering: the
same quantity `token_logprobs` computes for training).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from tumbler.errors import Conflict, InvalidRequest

log = logging.getLogger("tumbler.train.policy")


@dataclass(frozen=True)
class GenerationParams:
    """How one turn is sampled. max_new_tokens: tokens per turn; temperature 0 means greedy."""

    max_new_tokens: int = 32
    temperature: float = 0.8
    top_p: float = 1.0


@dataclass
class Generation:
    """One row's turn: the sampled ids (ending with the end-of-turn id when it stopped there),
    the sampler's log-prob of each, and whether it stopped at the end-of-turn token."""

    token_ids: list[int]
    logprobs: list[float]
    stopped: bool
    text: str = ""


class Batch(Protocol):
    def generate(self, prompts: dict[int, list[int]], params: GenerationParams) -> dict[int, Generation]: ...
    def close(self) -> None: ...


class Policy(Protocol):
    """What rollouts and the trainer need from a policy."""

    tokenizer: object
    eot_id: int

    def open_batch(self, n: int) -> Batch: ...


@dataclass
class HFPolicy:
    """A causal LM from transformers on CPU or GPU (bf16 on GPU, fp32 on CPU by default).

    Args:
        model, tokenizer: the loaded pair. reuse_cache: keep each episode's KV cache across
            turns (False re-prefills the whole history every turn; for measurement).
    """

    model: object
    tokenizer: object
    reuse_cache: bool = True
    eot_id: int = field(init=False)
    frozen_below: int | None = field(default=None, init=False)   # freeze_below: first trained layer
    trunk_layer: int | None = field(default=None, init=False)    # keep_trunk: the same, when kept

    def __post_init__(self):
        eot = getattr(self.tokenizer, "eos_token_id", None)
        if eot is None:
            raise InvalidRequest("the tokenizer has no end-of-turn (eos) token to stop at")
        self.eot_id = int(eot)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_id

    @classmethod
    def load(cls, spec: str, *, device: str = "auto", dtype: str = "auto", seed: int = 0,
             reuse_cache: bool = True) -> "HFPolicy":
        """Load `spec` (see tumbler.train.models). device "auto": cuda when present, else cpu."""
        import torch
        from tumbler.train import models
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                       "float16": torch.float16}.get(dtype)
        if torch_dtype is None:
            raise InvalidRequest(f"dtype {dtype!r}: use auto, float32, bfloat16 or float16")
        tokenizer = models.load_tokenizer(spec)
        model = models.load_model(spec, torch_dtype, seed=seed).to(device)
        return cls(model, tokenizer, reuse_cache=reuse_cache)

    def add_lora(self, base: str, r: int = 16, alpha: float = 32.0, dropout: float = 0.0,
                 target_modules: list[str] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> None:
        """Wrap the model in LoRA adapters (peft): only they are trained from here on. `base`
        is the model spec a saved adapter names to be loaded under (tumbler.train.models). A
        model loaded from a LoRA checkpoint has its adapters already."""
        from peft import LoraConfig, get_peft_model
        if _is_peft(self.model):
            return
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                            target_modules=list(target_modules), task_type="CAUSAL_LM")
        try:
            self.model = get_peft_model(self.model, config)
        except ValueError as exc:     # e.g. a target module the model does not have
            raise InvalidRequest(f"model.lora: {exc}") from None
        from tumbler.train import models
        # where a saved adapter's base comes from: a local directory when there is one
        self.model.peft_config["default"].base_model_name_or_path = (
            base if base == "tiny" else str(models.resolve(base)))

    @property
    def device(self):
        return next(self.model.parameters()).device

    def open_batch(self, n: int) -> "HFBatch":
        return HFBatch(self, n)

    def token_logprobs(self, input_ids, attention_mask, temperature: float = 1.0,
                       with_entropy: bool = False, positions=None, with_hidden: bool = False,
                       pack=None, trunk=None):
        """Log-probs [B, T-1] of input_ids[:, 1:] under the model (grad flows), and the
        per-position entropy [B, T-1] when asked (else None). Right-padded input expected.
        with_hidden (needs positions): also the final hidden states at `positions`, [N, H]
        (a critic's input), as a third value.

        positions [B, T-1] (bool): compute only there (the trained tokens), 0 elsewhere; the
        vocabulary projection and softmax over every prompt position would cost more than the
        transformer's own forward on a 49k vocabulary.

        pack (needs positions): the same rows packed by shared prefix (tumbler.train.packing),
        fed instead of input_ids; the results are those of the unpacked rows.
        trunk [B, T-1, H] (needs positions and `trunk_layer`): the frozen layers' output at
        each input token, kept from generation (HFBatch.trunk); only the layers from
        `trunk_layer` up then run."""
        import torch
        body, head = self._body(), getattr(self._lm(), "lm_head", None)
        if positions is None or body is None or head is None:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                use_cache=False).logits[:, :-1].float()
            targets = input_ids[:, 1:]
        else:
            where = positions.bool()
            if trunk is not None:
                out = self._top_forward(trunk, input_ids, attention_mask, pack)
                trained = (out[where] if pack is None else
                           out.reshape(-1, out.shape[-1]).index_select(0, pack.index))
            elif pack is not None:
                from tumbler.train.packing import mask_for
                out = body(input_ids=pack.input_ids, attention_mask=mask_for(body, pack.attention),
                           position_ids=pack.position_ids, use_cache=False).last_hidden_state
                trained = out.reshape(-1, out.shape[-1]).index_select(0, pack.index)
            else:
                hidden = body(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).last_hidden_state[:, :-1]
                trained = hidden[where]
            logits = head(trained).float()
            targets = input_ids[:, 1:][where]
        if temperature and temperature != 1.0:
            logits = logits / temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
        if positions is not None and body is not None and head is not None:
            full = torch.zeros(positions.shape, dtype=logp.dtype, device=logp.device)
            logp = full.masked_scatter(where, logp)
            if entropy is not None:
                entropy = torch.zeros_like(full).masked_scatter(where, entropy)
            if with_hidden:
                return logp, entropy, trained
        if with_hidden:
            raise InvalidRequest("with_hidden needs positions and a model with .model and .lm_head")
        return logp, entropy

    def _top_forward(self, trunk, input_ids, attention_mask, pack=None):
        """The decoder layers from `trunk_layer` up and the final norm, over the frozen layers'
        output `trunk` [B, T-1, H] (packed first when `pack` is given): what the whole body
        computes at those positions, without running the frozen layers again."""
        import torch
        from tumbler.train.packing import causal_mask, mask_for
        body = self._body()
        if pack is not None:
            hidden, positions, allowed = trunk[pack.source_row, pack.source_pos], pack.position_ids, pack.attention
        else:
            width = trunk.shape[1]
            hidden, allowed = trunk, causal_mask(attention_mask[:, :width])
            positions = torch.arange(width, device=trunk.device).expand(trunk.shape[0], width)
        rotary = body.rotary_emb(hidden, position_ids=positions)
        mask = mask_for(body, allowed)
        for layer in body.layers[self.trunk_layer:]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary,
                           position_ids=positions, use_cache=False)
        return body.norm(hidden)

    def _lm(self):
        """The causal LM itself (under LoRA's wrapper when there is one)."""
        return self.model.get_base_model() if _is_peft(self.model) else self.model

    def _body(self):
        return getattr(self._lm(), "model", None)

    def keep_trunk(self) -> bool:
        """From here on keep the frozen layers' output at every token generated or fed, so the
        update runs only the trained layers (`freeze_below` first). Llama-family models only
        (their decoder layers take the rotary embeddings and a full causal mask); returns
        whether it is on."""
        from tumbler.train.packing import supported
        body = self._body()
        ok = (self.frozen_below is not None and not _is_peft(self.model) and body is not None
              and getattr(self.model.config, "model_type", None) == "llama"
              and hasattr(body, "rotary_emb") and supported(body))
        self.trunk_layer = self.frozen_below if ok else None
        return ok

    def freeze_below(self, trainable_layers: int | None) -> None:
        """Train only the top `trainable_layers` decoder layers and the final norm (None: all).
        Autograd then stops at the first trainable layer: the backward pass, two thirds of a
        step's compute, runs through those layers only."""
        if trainable_layers is None:
            return
        layers = getattr(getattr(self.model, "model", None), "layers", None)
        if layers is None:
            raise InvalidRequest("this model has no .model.layers to freeze below")
        for p in self.model.parameters():
            p.requires_grad_(False)
        for layer in list(layers)[-trainable_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
        self.frozen_below = max(0, len(layers) - trainable_layers) or None
        norm = getattr(self.model.model, "norm", None)
        for p in (norm.parameters() if norm is not None else ()):
            p.requires_grad_(True)

    def save(self, directory: Path) -> None:
        """Weights (or, with LoRA, the adapters and where the base model is) and tokenizer,
        loadable with HFPolicy.load(str(directory))."""
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


class HFBatch:
    """`n` episodes generated together; row i keeps its KV cache between calls.

    The cache holds, per row, every token fed so far, with padding positions masked out. A call
    feeds each listed row the tokens of its prompt the cache has not seen, then samples."""

    def __init__(self, policy: HFPolicy, n: int):
        import torch
        if n < 1:
            raise InvalidRequest("a generation batch needs at least one row")
        self.policy, self.n = policy, n
        self.rows = list(range(n))        # episode index of each row of the cache
        self.fed: dict[int, list[int]] = {i: [] for i in range(n)}
        self.cache = None
        self.mask = torch.zeros((n, 0), dtype=torch.long, device=policy.device)
        self.closed = False
        # policy.keep_trunk(): per episode, the frozen layers' output at each token fed so far
        self.states: dict[int, list] = {i: [] for i in range(n)}
        self._captured = None     # the last forward's frozen-layer output [R, L, H]

    def close(self) -> None:
        self.cache, self.closed = None, True

    def generate(self, prompts: dict[int, list[int]], params: GenerationParams) -> dict[int, Generation]:
        """Sample one turn for each episode in `prompts` (episode index -> its whole token list)."""
        import torch
        if self.closed:
            raise Conflict("this generation batch is closed")
        if not prompts:
            return {}
        if not self.policy.reuse_cache:
            self._drop_cache()
        self._keep(sorted(prompts))
        new = []
        for ep in self.rows:
            ids, fed = prompts[ep], self.fed[ep]
            if ids[:len(fed)] != fed:
                raise Conflict(f"episode {ep}: its prompt does not extend the tokens already fed "
                               "(a rewritten history needs a batch of its own)")
            if len(ids) == len(fed):
                raise InvalidRequest(f"episode {ep}: no new tokens to feed")
            new.append(ids[len(fed):])
        with torch.inference_mode():
            outs = self._sample(new, params)
        for ep, ids in zip(self.rows, new):
            self.fed[ep] = self.fed[ep] + ids + outs[ep].token_ids[:-1]
        return outs

    def trunk(self, episode: int):
        """The frozen layers' output at each token fed for `episode` [len(fed), H] (the update
        then runs only the trained layers), or None when the policy does not keep it."""
        import torch
        states = self.states.get(episode)
        if self.policy.trunk_layer is None or not states:
            return None
        out = torch.cat(states)
        self.states[episode] = [out]
        return out if len(out) == len(self.fed[episode]) else None

    def _drop_cache(self) -> None:
        import torch
        self.cache = None
        self.mask = torch.zeros((len(self.rows), 0), dtype=torch.long, device=self.policy.device)
        self.fed = {ep: [] for ep in self.fed}
        self.states = {ep: [] for ep in self.states}

    def _keep_states(self, take) -> None:
        """Append the last forward's frozen-layer output: take(r) gives row r's [k, H] part."""
        if self._captured is not None:
            for r, ep in enumerate(self.rows):
                part = take(r)
                if part is not None and len(part):
                    self.states[ep].append(part)
            self._captured = None

    def _keep(self, episodes: list[int]) -> None:
        """Shrink the cache to the rows of `episodes` (episodes that ended leave the batch)."""
        import torch
        unknown = [ep for ep in episodes if ep not in self.rows]
        if unknown:
            raise InvalidRequest(f"episodes {unknown} are not (or no longer) in this batch")
        if episodes == self.rows:
            return
        index = torch.tensor([self.rows.index(ep) for ep in episodes], device=self.policy.device)
        if self.cache is not None:
            self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.rows = episodes

    def _forward(self, ids, chunk_mask):
        """Feed one chunk [R, L] (its padding masked) on top of the cache; last logits [R, V]."""
        import torch
        from transformers import DynamicCache
        if self.cache is None:
            self.cache = DynamicCache(config=self.policy.model.config)
        past = self.mask.sum(1, keepdim=True)
        positions = (past + chunk_mask.cumsum(1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, chunk_mask], dim=1)
        hook = None
        if self.policy.trunk_layer is not None:
            def capture(module, args, kwargs):
                self._captured = (args[0] if args else kwargs["hidden_states"]).detach()
            layer = self.policy._body().layers[self.policy.trunk_layer]
            hook = layer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            out = self.policy.model(input_ids=ids, attention_mask=self.mask, position_ids=positions,
                                    cache=self.cache, use_cache=True, logits_to_keep=1)
        finally:
            if hook is not None:
                hook.remove()
        self.cache = out.cache
        return out.logits[:, -1].float()

    def _prefill(self, new: list[list[int]]):
        """Feed each row its new tokens; last logits [R, V]. A first call feeds each distinct
        prompt once and copies its cache (a GRPO group's episodes share their first prompt)."""
        import torch
        device = self.policy.device
        distinct: dict[tuple, int] = {}
        if self.cache is None:
            for row in new:
                distinct.setdefault(tuple(row), len(distinct))
            feed = [list(row) for row in distinct]
        else:
            feed = new
        width = max(len(ids) for ids in feed)
        ids = torch.full((len(feed), width), self.policy.pad_id, dtype=torch.long, device=device)
        chunk_mask = torch.zeros_like(ids)
        for r, row in enumerate(feed):        # left padding: every row's last token is real
            ids[r, width - len(row):] = torch.tensor(row, device=device)
            chunk_mask[r, width - len(row):] = 1
        if len(feed) < len(new):
            self.mask = self.mask[:len(feed)]
        logits = self._forward(ids, chunk_mask)
        row_of = (lambda r: r) if len(feed) == len(new) else (lambda r: distinct[tuple(new[r])])
        self._keep_states(lambda r: self._captured[row_of(r), width - len(new[r]):])
        if len(feed) < len(new):
            expand = torch.tensor([distinct[tuple(row)] for row in new], device=device)
            self.cache.batch_select_indices(expand)
            self.mask, logits = self.mask[expand], logits[expand]
        return logits

    def _sample(self, new: list[list[int]], params: GenerationParams) -> dict[int, Generation]:
        import torch
        policy, device = self.policy, self.policy.device
        logits = self._prefill(new)
        tokens: list[list[int]] = [[] for _ in new]
        logps: list[list[float]] = [[] for _ in new]
        live = torch.ones(len(new), dtype=torch.bool, device=device)
        for step in range(params.max_new_tokens):
            token, logp = _pick(logits, params)
            for r in live.nonzero().flatten().tolist():
                tokens[r].append(int(token[r]))
                logps[r].append(float(logp[r]))
            live &= token != policy.eot_id
            if not live.any() or step == params.max_new_tokens - 1:
                break
            # finished rows still take a (masked) step so the batch stays rectangular
            logits = self._forward(torch.where(live, token, policy.pad_id).unsqueeze(1),
                                   live.long().unsqueeze(1))
            if self._captured is not None:     # policy.keep_trunk(): live rows' new token
                alive = live.tolist()
                self._keep_states(lambda r: self._captured[r] if alive[r] else None)
        decode = policy.tokenizer.decode
        return {ep: Generation(tokens[r], logps[r], bool(tokens[r] and tokens[r][-1] == policy.eot_id),
                               decode(tokens[r], skip_special_tokens=True))
                for r, ep in enumerate(self.rows)}


def _pick(logits, params: GenerationParams):
    """Sample (or take the argmax of) each row; returns (token [R], sampler log-prob [R])."""
    import torch
    if params.temperature <= 0:
        logp_all = torch.log_softmax(logits, dim=-1)
        token = logp_all.argmax(-1)
        return token, logp_all.gather(-1, token[:, None]).squeeze(-1)
    logp_all = torch.log_softmax(logits / params.temperature, dim=-1)
    probs = logp_all.exp()
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # keep the smallest head whose mass reaches top_p (the first token always stays)
        drop = sorted_p.cumsum(-1) - sorted_p >= params.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    token = torch.multinomial(probs, 1).squeeze(-1)
    logp = logp_all.gather(-1, token[:, None]).squeeze(-1)
    if not torch.isfinite(logp).all():
        raise InvalidRequest("sampling produced a non-finite log-prob (the model's weights may be NaN)")
    return token, logp


def check_params(params: GenerationParams) -> None:
    if params.max_new_tokens < 1:
        raise InvalidRequest("max_new_tokens must be at least 1")
    if not (0 < params.top_p <= 1) or math.isnan(params.temperature) or params.temperature < 0:
        raise InvalidRequest("need 0 < top_p <= 1 and temperature >= 0")
