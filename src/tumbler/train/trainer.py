"""The GRPO loop: setup, then per step rollout -> advantages -> update -> log, in that order.

    from tumbler.train import Trainer, build_config
    result = Trainer(build_config({"model": {"name": "tiny"}, "steps": 2})).run()
    result.eval_before["success_rate"], result.eval_after["success_rate"], result.run_dir
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from tumbler.errors import TumblerError
from tumbler.train import algorithms
from tumbler.train.chat import ChatRenderer
from tumbler.train.config import TrainConfig
from tumbler.train.policy import GenerationParams, HFPolicy
from tumbler.train.rollout import EnvPool, RolloutStats, rollout
from tumbler.train.rundir import RunDir
from tumbler.train.samples import to_batch

log = logging.getLogger("tumbler.train")


class TrainingDiverged(TumblerError):
    """The loss or the gradients became NaN/inf; the last checkpoint is left as it was."""


@dataclass
class TrainResult:
    run_dir: str
    steps: int
    train_seconds: float
    eval_before: dict | None = None
    eval_after: dict | None = None
    history: list[dict] = field(default_factory=list)
    plot: str | None = None


class Trainer:
    """One run of `config`. `on_step(metrics)` and `on_eval(record)` are called as they happen
    (the CLI draws its progress display from them)."""

    def __init__(self, config: TrainConfig, *, policy=None, envs: EnvPool | None = None,
                 on_step=None, on_eval=None):
        import torch
        self.config = config
        self.on_step, self.on_eval = on_step or (lambda m: None), on_eval or (lambda r: None)
        if config.model.threads:
            torch.set_num_threads(config.model.threads)
        torch.manual_seed(config.seed)
        self.policy = policy or HFPolicy.load(config.model.name, device=config.model.device,
                                              dtype=config.model.dtype, seed=config.seed,
                                              reuse_cache=config.model.reuse_cache)
        self.renderer = ChatRenderer(self.policy.tokenizer, self.policy.eot_id, config.env.system_prompt,
                                     config.env.first_template, config.env.turn_template)
        n = max(config.rollout.groups_per_step * config.rollout.group_size, config.eval.episodes, 1)
        self._own_envs = envs is None
        self.envs = envs or self._make_envs(n)
        self.reference = self._make_reference() if config.algorithm.kl_coef > 0 else None
        if hasattr(self.policy, "freeze_below"):
            self.policy.freeze_below(config.optim.trainable_layers)
        trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.optim.lr,
                                           weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.run_dir = RunDir(config.run_dir)
        self.run_dir.write_config(config)

    # -- setup -------------------------------------------------------------------------------

    def _make_envs(self, n: int) -> EnvPool:
        env = self.config.env
        if env.hosted:
            return EnvPool.hosted(env.id, n, image=env.image, step_timeout=env.step_timeout_s,
                                  format_penalty=env.format_penalty, **env.kwargs)
        return EnvPool.in_process(env.id, n, format_penalty=env.format_penalty, **env.kwargs)

    def _make_reference(self):
        import copy
        reference = copy.deepcopy(self.policy.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return reference

    def _lr_factor(self, step: int) -> float:
        optim, total = self.config.optim, max(1, self.config.steps)
        if step < optim.warmup_steps:
            return (step + 1) / (optim.warmup_steps + 1)
        progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
        if optim.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if optim.schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        cfg = self.config
        result = TrainResult(str(self.run_dir.path), 0, 0.0)
        try:
            result.eval_before = self.evaluate(step=0)
            started = time.monotonic()
            for step in range(1, cfg.steps + 1):
                metrics = self.train_step(step)
                result.history.append(metrics)
                result.steps = step
                self.run_dir.log("metrics", metrics)
                self.on_step(metrics)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save(f"step-{step:04d}")
                if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.steps:
                    self.evaluate(step)
                # stop before a step that would likely end past the limit (steps vary little)
                spent = time.monotonic() - started - self._eval_s
                if cfg.time_limit_s and spent + metrics["step_s"] > cfg.time_limit_s:
                    log.info("time limit of %.0f s: stopping after step %d (%.0f s spent)",
                             cfg.time_limit_s, step, spent)
                    break
            result.train_seconds = time.monotonic() - started - self._eval_s
            result.eval_after = self.evaluate(step=result.steps)
            if cfg.save_final:
                self.save("final")
        except KeyboardInterrupt:
            log.warning("interrupted: saving the policy as it is")
            self.save("interrupted")
            raise
        finally:
            result.plot = str(self.run_dir.plot())
            self.close()
        return result

    _eval_s = 0.0

    def close(self) -> None:
        if self._own_envs:
            self.envs.close()

    def _params(self, temperature: float) -> GenerationParams:
        r = self.config.rollout
        return GenerationParams(max_new_tokens=r.max_new_tokens, temperature=temperature, top_p=r.top_p)

    def _play(self, seeds, groups, temperature, stats):
        r = self.config.rollout
        return rollout(self.policy, self.renderer, self.envs, seeds, groups, self._params(temperature),
                       max_turns=r.max_turns, turn_bonus=r.turn_bonus, stats=stats)

    def collect(self, step: int, stats: RolloutStats):
        """A step's episodes, groups with a failed episode replayed up to max_retries times and
        then dropped. Returns (episodes, dropped group count)."""
        r = self.config.rollout
        first = self.config.seed + (step - 1) * r.groups_per_step
        pending = {g: first + g for g in range(r.groups_per_step)}
        kept, dropped = [], 0
        for attempt in range(r.max_retries + 1):
            groups = [g for g in pending for _ in range(r.group_size)]
            episodes, _ = self._play([pending[g] for g in groups], groups, r.temperature, stats)
            failed = {ep.group for ep in episodes if ep.error}
            for ep in episodes:
                if ep.error:
                    log.warning("step %d: episode of seed %d failed: %s", step, ep.seed, ep.error)
            kept += [ep for ep in episodes if ep.group not in failed]
            pending = {g: pending[g] for g in failed}
            if not pending:
                break
        dropped = len(pending)
        return kept, dropped

    def train_step(self, step: int) -> dict:
        import torch
        cfg, alg = self.config, self.config.algorithm
        t0 = time.monotonic()
        stats = RolloutStats()
        episodes, dropped = self.collect(step, stats)
        rollout_s = time.monotonic() - t0
        metrics = {"step": step, "episodes": len(episodes), "groups_dropped": dropped,
                   "failed_episodes": stats.failed_episodes}
        metrics.update(_episode_metrics(episodes))
        t1 = time.monotonic()
        update = {"loss": 0.0, "grad_norm": 0.0, "trained_sequences": 0, "uniform_groups": 0}
        if episodes:
            batch = to_batch(episodes, self.policy.pad_id, self.policy.device)
            advantages = algorithms.compute_advantages(batch.rewards, batch.group_index,
                                                       estimator=alg.estimator, std_eps=alg.std_eps)
            keep = torch.arange(len(batch), device=batch.rewards.device)
            uniform = _uniform_groups(batch.rewards, batch.group_index)
            update["uniform_groups"] = len(uniform)
            if alg.skip_uniform_groups and uniform:
                keep = keep[~torch.isin(batch.group_index, torch.tensor(sorted(uniform), device=keep.device))]
            if len(keep):
                update.update(self._update(batch, advantages, keep))
        update_s = time.monotonic() - t1
        metrics.update(update)
        metrics.update({
            "lr": self.scheduler.get_last_lr()[0],
            "generated_tokens": stats.generated_tokens, "env_steps": stats.env_steps,
            "generation_s": round(stats.generation_s, 3), "env_s": round(stats.env_s, 3),
            "rollout_s": round(rollout_s, 3), "update_s": round(update_s, 3),
            "step_s": round(time.monotonic() - t0, 3),
            "tokens_per_s": round(stats.generated_tokens / max(stats.generation_s, 1e-9), 1),
            "env_steps_per_s": round(stats.env_steps / max(stats.env_s, 1e-9), 1),
        })
        if step == 1 or step % 5 == 0:
            self.run_dir.write_episodes(step, episodes)
        return metrics

    def _update(self, batch, advantages, keep) -> dict:
        """One optimizer step over the rows in `keep`, in micro-batches; losses are weighted so
        the accumulated gradient equals that of the whole batch aggregated at once."""
        import torch
        cfg, alg = self.config, self.config.algorithm
        model = self.policy.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sub = batch.rows(keep)
        adv = advantages[keep]
        total_tokens = float(sub.loss_mask.sum().clamp(min=1))
        total_rows = len(sub)
        scale = float(sub.loss_mask.shape[1]) if alg.loss_agg == "seq-mean-token-sum-norm" else None
        loss_sum, agg_metrics = 0.0, {}
        size = cfg.optim.micro_batch_size
        for start in range(0, total_rows, size):
            index = torch.arange(start, min(start + size, total_rows), device=adv.device)
            mb = sub.rows(index)
            mb_adv = adv[index]
            logp, entropy = self.policy.token_logprobs(mb.input_ids, mb.attention_mask,
                                                       temperature=cfg.rollout.temperature or 1.0,
                                                       with_entropy=alg.entropy_coef != 0,
                                                       positions=mb.loss_mask > 0)
            loss, pg_metrics = algorithms.policy_loss(
                logp, mb.old_logprobs, mb_adv, mb.loss_mask, clip_low=alg.clip_low,
                clip_high=alg.clip_high, dual_clip=alg.dual_clip, agg=alg.loss_agg, scale=scale)
            if self.reference is not None:
                with torch.no_grad():
                    ref_logits = self.reference(input_ids=mb.input_ids, attention_mask=mb.attention_mask,
                                                use_cache=False).logits[:, :-1].float()
                    ref_logits = ref_logits / (cfg.rollout.temperature or 1.0)
                    ref = torch.log_softmax(ref_logits, -1).gather(-1, mb.input_ids[:, 1:, None]).squeeze(-1)
                kl = algorithms.aggregate(algorithms.kl_penalty(logp, ref, kind="k3"), mb.loss_mask, alg.loss_agg, scale)
                loss = loss + alg.kl_coef * kl
                pg_metrics["kl"] = float(kl)
            if entropy is not None:
                ent = algorithms.aggregate(entropy, mb.loss_mask, alg.loss_agg, scale)
                loss = loss - alg.entropy_coef * ent
                pg_metrics["entropy"] = float(ent)
            # token-mean divides by this micro-batch's tokens, the seq modes by its rows
            weight = (float(mb.loss_mask.sum()) / total_tokens if alg.loss_agg == "token-mean"
                      else len(mb) / total_rows)
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(f"the loss became {float(loss)}; stopping with the last "
                                       "checkpoint as it was")
            (loss * weight).backward()
            loss_sum += float(loss.detach()) * weight
            for k, v in pg_metrics.items():
                agg_metrics[k] = agg_metrics.get(k, 0.0) + float(v) * weight
        max_norm = cfg.optim.max_grad_norm or float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(
            [p for p in model.parameters() if p.requires_grad], max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"the gradient norm became {grad_norm}; stopping")
        self.optimizer.step()
        self.scheduler.step()
        model.eval()
        return {"loss": loss_sum, "grad_norm": grad_norm, "trained_sequences": total_rows,
                **{f"pg/{k}": v for k, v in agg_metrics.items()}}

    def evaluate(self, step: int) -> dict | None:
        """Held-out success: one episode per seed from eval.seed on (never a training seed)."""
        ev = self.config.eval
        if ev.episodes == 0:
            return None
        t0 = time.monotonic()
        seeds = [ev.seed + i for i in range(ev.episodes)]
        episodes, stats = self._play(seeds, list(range(len(seeds))), ev.temperature, RolloutStats())
        record = {"step": step, **_episode_metrics(episodes), "failed_episodes": stats.failed_episodes,
                  "seconds": round(time.monotonic() - t0, 2)}
        self._eval_s += time.monotonic() - t0
        self.run_dir.log("eval", record)
        self.on_eval(record)
        return record

    def save(self, name: str) -> None:
        """The policy in run_dir/checkpoints/NAME (written aside, then renamed into place)."""
        target = self.run_dir.path / "checkpoints" / name
        tmp = target.with_name(name + ".tmp")
        self.policy.save(tmp)
        if target.exists():
            import shutil
            shutil.rmtree(target)
        tmp.rename(target)


def _uniform_groups(rewards, group_index) -> set[int]:
    groups: dict[int, set[float]] = {}
    for r, g in zip(rewards.tolist(), group_index.tolist()):
        groups.setdefault(g, set()).add(round(r, 9))
    return {g for g, values in groups.items() if len(values) == 1}


def _episode_metrics(episodes) -> dict:
    n = max(1, len(episodes))
    return {"reward_mean": round(sum(ep.reward for ep in episodes) / n, 4),
            "success_rate": round(sum(ep.success for ep in episodes) / n, 4),
            "turns_mean": round(sum(ep.turns for ep in episodes) / n, 3),
            "episodes_played": len(episodes)}
