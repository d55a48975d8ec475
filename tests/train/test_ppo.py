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
    hidden_of = lambda mb: tiny_policy.token_logprobs(mb.input_ids, mb.attention_mask,   # noqa: E731
                                                      positions=mb.loss_mask > 0, with_hidden=True)[2]
    adv, old, returns = head.advantages(batch, hidden_of, gamma=1.0, lam=1.0,
                                        micro_batches=[torch.tensor([0]), torch.tensor([1])])
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


def test_importance_sampling_corrects_a_sampler_that_is_not_the_trainer(tiny_policy, tmp_path):
    """Sampler log-probs shifted by +0.5 (as if another engine sampled): the trainer recomputes
    its own, and the token weights exp(old - sampler) = exp(-0.5) are applied and reported."""
    import math
    cfg = build_config({"model": {"name": "tiny", "device": "cpu"}, "env": {"hosted": False},
                        "algorithm": {"importance_sampling": "token", "is_high": 2.0},
                        "eval": {"episodes": 0}, "run_dir": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    try:
        tok, prompt = trainer.policy.tokenizer, trainer.renderer.first_turn("guess")
        episodes = []
        for text, reward in (("\\boxed{2}", 1.0), ("no", 0.0)):
            ids = tok(text, add_special_tokens=False).input_ids
            full = torch.tensor([prompt + ids])
            with torch.no_grad():
                logp, _ = trainer.policy.token_logprobs(full, torch.ones_like(full), temperature=0.8)
            ep = Episode(seed=0, group=0, reward=reward)
            ep.extend(prompt, trained=False)
            ep.extend(ids, trained=True, logprobs=[x + 0.5 for x in logp[0, len(prompt) - 1:].tolist()])
            episodes.append(ep)
        batch = to_batch(episodes, trainer.policy.pad_id)
        from tumbler.train import algorithms
        out = trainer._update(batch, algorithms.compute_advantages(batch.rewards, batch.group_index),
                              torch.arange(2))
    finally:
        trainer.close()
    assert math.isclose(out["is/weight_mean"], math.exp(-0.5), rel_tol=1e-3)
    assert 0.49 < out["is/logprob_gap_max"] < 0.51
