"""PPO's critic: a value head on the policy's last hidden states, and GAE advantages from it.

    critic = ValueHead.for_policy(policy)
    # hidden_of(micro-batch): the policy's final hidden states at its trained tokens
    advantages, old_values, returns = critic.advantages(batch, hidden_of, gamma=1.0, lam=0.95,
                                                        micro_batches=[rows_0, rows_1])

The head is one linear layer over the policy trunk's final hidden state at each generated token,
read detached: the critic learns from the policy's features without pulling them its own way,
and costs no forward pass of its own during the update (the policy's forward gives the hidden
states). Before an update one forward without gradients gives the old values; the episode's
reward sits on the last generated token of each sequence, GAE runs back over the generated
tokens of all turns (observation tokens pass values through), and the advantages are whitened
over the batch's generated tokens (verl's way).
"""
from __future__ import annotations

from tumbler.train import algorithms


class ValueHead:
    """A linear value head (hidden -> 1), initialised to zero (values start at 0)."""

    def __init__(self, hidden_size: int, device, dtype):
        import torch
        self.linear = torch.nn.Linear(hidden_size, 1, device=device, dtype=dtype)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    @classmethod
    def for_policy(cls, policy) -> "ValueHead":
        p = next(policy.model.parameters())
        return cls(policy.model.config.hidden_size, p.device, p.dtype)

    def parameters(self):
        return self.linear.parameters()

    def state_dict(self) -> dict:
        return self.linear.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.linear.load_state_dict(state)

    def values(self, hidden, positions):
        """Values [B, T-1] at `positions` (0 elsewhere) from hidden states [N, H] at them."""
        import torch
        flat = self.linear(hidden.detach()).squeeze(-1).float()
        full = torch.zeros(positions.shape, dtype=flat.dtype, device=flat.device)
        return full.masked_scatter(positions.bool(), flat)

    def advantages(self, batch, hidden_of, *, gamma: float, lam: float, micro_batches):
        """(advantages, old values, returns), each [B, T-1], for the rows of `batch`.
        hidden_of(micro-batch) gives the policy's final hidden states at its trained tokens;
        micro_batches: the row indices of each micro-batch."""
        import torch
        old = torch.zeros_like(batch.loss_mask)
        with torch.no_grad():
            for index in micro_batches:
                mb = batch.rows(index)
                values = self.values(hidden_of(mb), mb.loss_mask > 0)
                old[index, :values.shape[1]] = values
        rewards = torch.zeros_like(batch.loss_mask)
        last = _last_true(batch.loss_mask > 0)
        rows = torch.arange(len(batch), device=rewards.device)
        rewards[rows, last] = batch.rewards.to(rewards.dtype) * (batch.loss_mask.sum(1) > 0)
        advantages, returns = algorithms.gae(rewards, old, batch.loss_mask, gamma=gamma, lam=lam)
        return algorithms.whiten(advantages, batch.loss_mask), old, returns


def _last_true(mask):
    """Index of the last True in each row (0 for a row with none)."""
    import torch
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.zeros_like(positions)).max(1).values
