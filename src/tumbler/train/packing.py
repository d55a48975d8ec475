"""Shared-prefix packing: a GRPO group's rows share their first prompt; the update feeds it once.

The rows of one group start with the same tokens (same seed, same first observation, same chat
template), and in single-turn RLVR or a short game that prompt is most of every row: 16 rows of
~60 prompt tokens and 8 generated ones are 1,100 tokens through every layer, forward and
backward, of which 880 are four copies of four prompts. A *pack* holds a group once: the rows'
longest common input prefix, then each row's remaining inputs as a segment of its own. A 4-D
attention mask lets a segment see the prefix and itself only, and every token keeps its own
position id, so each token attends to exactly the tokens it attended to as a separate row, at the
same positions: log-probs and gradients equal the unpacked ones up to float rounding (tested),
and the prefix's n-1 copies are gone from every layer.

    packed = pack(mb.input_ids, mb.attention_mask, mb.loss_mask > 0, mb.group_index)
    policy.token_logprobs(mb.input_ids, mb.attention_mask, positions=..., pack=packed)

A row's *inputs* are its tokens but the last (nothing is predicted after the last token), so a
group whose rows are all equal (four identical answers) packs into one segment-free prefix.
Groups whose common prefix saves too little (rewritten agent histories) stay one row per pack.
"""
from __future__ import annotations

from dataclasses import dataclass

MIN_SAVING = 0.2     # pack a group only when this share of its input tokens are prefix copies


@dataclass
class Packed:
    input_ids: object     # [M, L] long: pack m's tokens, prefix first, then each row's segment
    position_ids: object  # [M, L] long: each token's position in its own row
    attention: object     # [M, 1, L, L] bool: query may attend key (prefix, or own segment, causal)
    source_row: object    # [M, L] long: the batch row each packed token comes from
    source_pos: object    # [M, L] long: its position there (source_row, source_pos) -> (m, l)
    index: object         # [N] long: flat m*L+l of the hidden state that predicts each trained
                          # token, in the row-major order of `positions` (the trained tokens)
    saved_tokens: int     # input tokens the packing removed

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def pack(input_ids, attention_mask, positions, groups, min_saving: float = MIN_SAVING) -> Packed:
    """Pack right-padded rows [B, T] (positions [B, T-1]: the trained tokens; groups [B])."""
    import torch
    lengths = attention_mask.sum(1).tolist()
    ids = input_ids.tolist()
    inputs = [ids[i][:max(0, lengths[i] - 1)] for i in range(len(ids))]
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        by_group.setdefault(g, []).append(i)
    packs: list[tuple[int, list[int]]] = []          # (prefix length, rows)
    for rows in by_group.values():
        prefix = _common_prefix([inputs[i] for i in rows])
        total = sum(len(inputs[i]) for i in rows)
        if len(rows) > 1 and prefix * (len(rows) - 1) >= min_saving * max(total, 1):
            packs.append((prefix, rows))
        else:
            packs.extend((len(inputs[i]), [i]) for i in rows)
    sizes = [prefix + sum(len(inputs[i]) - prefix for i in rows) for prefix, rows in packs]
    width, m = max(1, max(sizes)), len(packs)
    # per packed slot: source row, source position, segment (-1 padding, 0 prefix, j+1 row j)
    source_row, source_pos, segment = [0] * (m * width), [0] * (m * width), [-1] * (m * width)
    where: dict[tuple[int, int], int] = {}          # (row, t) -> flat packed index
    for p, (prefix, rows) in enumerate(packs):
        slot = p * width
        for t in range(prefix):              # the prefix once, read by every row of the pack
            source_row[slot], source_pos[slot], segment[slot] = rows[0], t, 0
            where.update(((row, t), slot) for row in rows)
            slot += 1
        for j, row in enumerate(rows):
            for t in range(prefix, len(inputs[row])):
                source_row[slot], source_pos[slot], segment[slot] = row, t, j + 1
                where[(row, t)] = slot
                slot += 1
    source_row = torch.tensor(source_row, dtype=torch.long).view(m, width)
    source_pos = torch.tensor(source_pos, dtype=torch.long).view(m, width)
    segment = torch.tensor(segment, dtype=torch.long).view(m, width)
    trained = positions.nonzero().tolist()        # row-major, as masked_scatter fills
    index = torch.tensor([where[(r, t)] for r, t in trained], dtype=torch.long)
    device = input_ids.device
    packed_ids = input_ids.cpu()[source_row, source_pos]
    real = segment >= 0
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    attention = causal & real[:, :, None] & real[:, None, :] & ((seg_k == 0) | (seg_k == seg_q))
    attention |= torch.eye(width, dtype=torch.bool)   # a padding query sees itself (no NaN row)
    saved = sum(len(inputs[i]) for i in range(len(inputs))) - int(real.sum())
    return Packed(packed_ids.to(device), source_pos.to(device), attention[:, None].to(device),
                  source_row.to(device), source_pos.to(device), index.to(device), saved)


def _common_prefix(rows: list[list[int]]) -> int:
    first, n = rows[0], min(len(r) for r in rows)
    for k in range(n):
        token = first[k]
        if any(r[k] != token for r in rows[1:]):
            return k
    return n


def supported(model) -> bool:
    """Whether `model`'s attention takes a custom 4-D mask (sdpa and eager do; flash does not)."""
    return getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager", None)


def mask_for(model, allowed):
    """A bool 4-D mask [M, 1, L, L] (True: may attend) in the form `model`'s attention takes:
    sdpa the bool mask itself, eager an additive float one."""
    import torch
    if not supported(model):
        raise ValueError(f"attention {model.config._attn_implementation!r} takes no custom mask")
    if model.config._attn_implementation == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def causal_mask(attention_mask):
    """The bool 4-D mask of right-padded rows [B, T]: causal over real keys (a padding query
    sees itself, so no row of the softmax is empty)."""
    import torch
    width = attention_mask.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal & attention_mask.bool()[:, None, :]
    return (allowed | torch.eye(width, dtype=torch.bool, device=allowed.device))[:, None]


def micro_batches(groups, size: int) -> list:
    """Row indices [k] per micro-batch of at most `size` rows, whole groups kept together where
    they fit (a group's prefix then packs once; a group larger than `size` is split)."""
    import torch
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        by_group.setdefault(g, []).append(i)
    batches: list[list[int]] = [[]]
    for rows in by_group.values():
        for start in range(0, len(rows), size):
            part = rows[start:start + size]
            if len(batches[-1]) + len(part) > size:
                batches.append([])
            batches[-1] += part
    return [torch.tensor(b, dtype=torch.long, device=groups.device) for b in batches if b]
