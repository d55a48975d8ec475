"""PPO with a critic in the loop: GAE over the generated tokens of every turn from a value head
on the policy's hidden states, trained beside the policy."""
import torch

from tumbler.train import Trainer, build_config
from tumbler.train.critic import ValueHead
from tumbler.train.rollout import Episode
from tumbler.train.samples import to_batch


def two_turn_episode(reward):
    """prompt(3) reply(2) observation(2) reply(2): trained positions are the replies'."""
    ep = Episode(seed=0, group=0, reward=reward)
    ep.extend([5, 6, 7], trained=False)
    ep.extend([8, 9], trained=True, logprobs=[-1.0, -1.0])
    ep.extend([10, 11], trained=False)
    ep.extend([12, 13], trained=True, logprobs=[-1.0, -1.0])
    return ep


def test_gae_with_a_fresh_critic_gives_every_generated_token_the_episode_return(tiny_policy):
    """Values start at 0: with gamma = lam = 1 each generated token's return is the episode's
    reward, observation and prompt tokens get none, and advantages are whitened."""
    batch = to_batch([two_turn_episode(1.0), two_turn_episode(0.0)], tiny_policy.pad_id)
    head = ValueHead.for_policy(tiny_policy)
    adv, old, returns = head.advantages(tiny_policy, batch, gamma=1.0, lam=1.0, micro_batch_size=1)
    mask = batch.loss_mask
    assert torch.equal(old, torch.zeros_like(old))
    assert torch.equal(returns, mask * torch.tensor([[1.0], [0.0]]))
    assert float(adv[mask > 0].mean()).__abs__() < 1e-5 and float(adv[0][mask[0] > 0].min()) > 0
    assert torch.equal(adv * (1 - mask), torch.zeros_like(adv))


def test_ppo_trains_the_critic_beside_the_policy_and_checkpoints_it(tmp_path):
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu"},
        "env": {"id": "GuessTheNumber-v0", "hosted": False, "format_penalty": -0.1,
                "kwargs": {"low": 1, "high": 3, "max_turns": 2}},
        "rollout": {"groups_per_step": 2, "group_size": 2, "max_turns": 2, "max_new_tokens": 4,
                    "temperature": 1.0},
        "algorithm": {"estimator": "ppo", "lam": 0.9},
        "eval": {"episodes": 0}, "steps": 2, "checkpoint_every": 1, "run_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    result = trainer.run()
    assert all("pg/vf_loss" in m for m in result.history)
    assert float(trainer.critic.linear.weight.detach().abs().sum()) > 0       # the head learned something
    state = torch.load(tmp_path / "run" / "checkpoints" / "final" / "trainer.pt", weights_only=False)
    assert torch.equal(state["critic"]["weight"], trainer.critic.linear.weight.detach())
