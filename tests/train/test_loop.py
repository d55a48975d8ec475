"""Rollouts through envs hosted in sandboxes, and a short training run with the tiny model."""
import json
import math

import pytest

from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams
from tumbler.train.rollout import EnvPool, rollout
from tumbler.train.scripted import ScriptedPolicy


def binary_search(ep, turn, prompt_ids):
    return "\\boxed{" + str([2, 1, 3][turn]) + "}"


def test_rollout_through_envs_hosted_in_sandboxes(tokenizer):
    """A scripted player against GuessTheNumber in two sandboxes: the episodes end on the
    sandbox's verdict, and the same seed gives the same episode in process and hosted."""
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"])
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    params = GenerationParams(max_new_tokens=8)
    kwargs = dict(low=1, high=4, max_turns=4)
    with EnvPool.hosted("GuessTheNumber-v0", 2, **kwargs) as hosted:
        assert len(hosted.sandboxes) == 2
        got, stats = rollout(policy, renderer, hosted, [3, 4], [0, 1], params, max_turns=4)
    with EnvPool.in_process("GuessTheNumber-v0", 2, **kwargs) as local:
        want, _ = rollout(policy, renderer, local, [3, 4], [0, 1], params, max_turns=4)
    assert [ep.success for ep in got] == [True, True]       # 1..4 in order always finds it
    assert [ep.token_ids for ep in got] == [ep.token_ids for ep in want]
    assert [ep.turns for ep in got] == [ep.turns for ep in want]
    assert stats.env_steps == sum(ep.turns for ep in got) and stats.failed_episodes == 0


def test_failing_env_marks_its_episode_only(tokenizer):
    """An env that dies mid-episode fails that episode (counted); the other plays on."""
    policy = ScriptedPolicy(tokenizer, ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}"])
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    with EnvPool.hosted("GuessTheNumber-v0", 2, low=1, high=100, max_turns=3) as pool:
        pool.sandboxes[1].remove()
        episodes, stats = rollout(policy, renderer, pool, [1, 1], [0, 0],
                                  GenerationParams(max_new_tokens=8), max_turns=3)
    assert episodes[0].error is None and episodes[0].turns == 3
    assert episodes[1].error is not None and stats.failed_episodes == 1


def test_short_training_run_writes_its_run_dir(tmp_path):
    from tumbler.train import Trainer, build_config
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu"},
        "env": {"id": "GuessTheNumber-v0", "hosted": False, "kwargs": {"low": 1, "high": 3, "max_turns": 2}},
        "rollout": {"groups_per_step": 2, "group_size": 4, "max_turns": 2, "max_new_tokens": 4,
                    "temperature": 1.0},
        "algorithm": {"skip_uniform_groups": False},
        "optim": {"lr": 1e-3, "micro_batch_size": 3},
        "eval": {"episodes": 4},
        "steps": 2, "run_dir": str(tmp_path / "run"),
    })
    result = Trainer(cfg).run()
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["trained_sequences"] == 8 for m in metrics)   # uniform groups kept here
    assert metrics[0]["generated_tokens"] > 0
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 2] and result.eval_after == evals[-1]
    assert (run / "curve.png").stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    board = EventAccumulator(str(run / "tensorboard"))
    board.Reload()
    assert [e.step for e in board.Scalars("metrics/reward_mean")] == [1, 2]
    assert [e.step for e in board.Scalars("eval/success_rate")] == [0, 2]
    assert (run / "checkpoints" / "final" / "config.json").is_file()
    assert "tiny" in (run / "config.yaml").read_text()


def test_update_changes_the_policy_towards_rewarded_tokens(tiny_policy):
    """One GRPO update on scripted samples raises the log-prob of the rewarded reply."""
    import torch
    from tumbler.train import Trainer, build_config
    from tumbler.train.samples import to_batch
    from tumbler.train.rollout import Episode
    cfg = build_config({"model": {"name": "tiny"}, "env": {"hosted": False}, "eval": {"episodes": 0},
                        "optim": {"lr": 1e-2}, "run_dir": "/tmp/tumbler-test-run"})
    trainer = Trainer(cfg)
    try:
        tok = trainer.policy.tokenizer
        prompt = trainer.renderer.first_turn("guess")
        good, bad = tok("\\boxed{2}", add_special_tokens=False).input_ids, tok("no", add_special_tokens=False).input_ids

        def episode(reply, reward):
            ep = Episode(seed=0, group=0, reward=reward)
            ep.extend(prompt, trained=False)
            ids = torch.tensor([prompt + reply])
            with torch.no_grad():
                logp, _ = trainer.policy.token_logprobs(ids, torch.ones_like(ids), temperature=0.8)
            ep.extend(reply, trained=True, logprobs=logp[0, len(prompt) - 1:].tolist())
            return ep
        episodes = [episode(good, 1.0), episode(bad, 0.0)] * 2
        batch = to_batch(episodes, trainer.policy.pad_id)
        before = float((batch.old_logprobs[0] * batch.loss_mask[0]).sum())
        from tumbler.train import algorithms
        adv = algorithms.compute_advantages(batch.rewards, batch.group_index)
        trainer._update(batch, adv, torch.arange(4))
        ids = torch.tensor([prompt + good])
        with torch.no_grad():
            after = float(trainer.policy.token_logprobs(ids, torch.ones_like(ids), 0.8)[0][0, len(prompt) - 1:].sum())
        assert after > before
    finally:
        trainer.close()


def test_turn_bonus_rewards_fewer_turns_in_hosted_envs(tokenizer):
    """Found in 2 turns out of 4 with a 0.25 bonus a turn saved: reward 1 + 2 * 0.25."""
    policy = ScriptedPolicy(tokenizer, binary_search)
    renderer = ChatRenderer(tokenizer, policy.eot_id)
    with EnvPool.hosted("GuessTheNumber-v0", 1, low=1, high=4, max_turns=4) as pool:
        target_seed = next(s for s in range(50) if _target(s) == 1)
        (ep,), _ = rollout(policy, renderer, pool, [target_seed], [0], GenerationParams(max_new_tokens=8),
                           max_turns=4, turn_bonus=0.25)
    assert ep.success and ep.turns == 2 and ep.reward == pytest.approx(1.5)


def _target(seed):
    from tumbler import envs
    env = envs.make("GuessTheNumber-v0", low=1, high=4, max_turns=4)
    env.reset(seed=seed)
    return env.unwrapped.target


def test_dynamic_sampling_replaces_uniform_groups(tokenizer, tmp_path):
    """Guesses 1 and 2 alternate within each group of two on GuessTheNumber 1..3 with one
    guess: a group whose number is 3 fails twice (no gradient) and is replaced by a fresh seed."""
    from tumbler.train import Trainer, build_config
    from tumbler.train.rollout import RolloutStats

    def base(dynamic):
        return build_config({
            "model": {"name": "tiny", "device": "cpu"},
            "env": {"id": "GuessTheNumber-v0", "hosted": False, "kwargs": {"low": 1, "high": 3, "max_turns": 1}},
            "rollout": {"groups_per_step": 6, "group_size": 2, "max_turns": 1},
            "algorithm": {"dynamic_sampling": dynamic, "max_resample_rounds": 3},
            "eval": {"episodes": 0}, "run_dir": str(tmp_path / f"run-{dynamic}")})

    found = {}
    for dynamic in (False, True):
        trainer = Trainer(base(dynamic))
        trainer.policy = ScriptedPolicy(tokenizer, lambda ep, turn, ids: "\\boxed{" + str(1 + ep % 2) + "}")
        try:
            episodes, dropped, resampled = trainer.collect(1, RolloutStats())
        finally:
            trainer.close()
        groups = {}
        for ep in episodes:
            groups.setdefault(ep.group, set()).add(ep.reward)
        found[dynamic] = (sum(len(v) == 1 for v in groups.values()), resampled, len(episodes))
    uniform_before, _, _ = found[False]
    uniform_after, resampled, n = found[True]
    assert uniform_before > 0 and resampled >= uniform_before
    assert uniform_after < uniform_before and n == 12


@pytest.mark.parametrize("estimator", ["grpo", "ppo"])
def test_a_bfloat16_policy_trains_on_the_cpu(tmp_path, estimator):
    """The GPU's dtype end to end on the CPU: bf16 weights, kept trunk and packed prefixes,
    the critic (ppo); the trained layer moves, the frozen one does not."""
    import torch
    from tumbler.train import Trainer, build_config
    cfg = build_config({
        "model": {"name": "tiny", "device": "cpu", "dtype": "bfloat16"},
        "env": {"id": "GuessTheNumber-v0", "hosted": False, "format_penalty": -0.1,
                "kwargs": {"low": 1, "high": 3, "max_turns": 2}},
        "rollout": {"groups_per_step": 2, "group_size": 3, "max_turns": 2, "max_new_tokens": 4,
                    "temperature": 1.0},
        "algorithm": {"estimator": estimator, "skip_uniform_groups": False},
        "optim": {"lr": 1e-2, "trainable_layers": 1},
        "eval": {"episodes": 0}, "steps": 2, "save_final": False, "run_dir": str(tmp_path / "run"),
    })
    trainer = Trainer(cfg)
    model = trainer.policy.model
    assert next(model.parameters()).dtype == torch.bfloat16 and trainer.policy.trunk_layer == 1
    frozen = model.model.layers[0].mlp.up_proj.weight.clone()
    trained = model.model.layers[1].mlp.up_proj.weight.clone()
    result = trainer.run()
    assert all(math.isfinite(m["loss"]) and m["trained_sequences"] == 6 for m in result.history)
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, frozen)
    if estimator == "ppo":     # the random policy's rewards are all equal: only PPO's GAE
        assert all(m["grad_norm"] > 0 for m in result.history)      # gives advantages then
        assert not torch.equal(model.model.layers[1].mlp.up_proj.weight, trained)
