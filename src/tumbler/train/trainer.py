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

from pathlib import Path

from tumbler.errors import Conflict, NotFound, TumblerError
from tumbler.train import algorithms, packing
from tumbler.train.chat import ChatRenderer
from tumbler.train.config import TrainConfig
from tumbler.train.policy import GenerationParams, HFPolicy
from tumbler.train.rollout import EnvPool, RolloutStats
from tumbler.train.rundir import RunDir
from tumbler.train.samples import to_batch

log = logging.getLogger("tumbler.train")

RESAMPLE_SEEDS = 500_000       # dynamic sampling's seeds start here (held-out ones at eval.seed)
TRAINER_STATE = "trainer.pt"     # in a checkpoint, beside the weights: what a resume restores


class RolloutFailed(TumblerError):
    """Every episode of a rollout failed (the env, the image or the agent program is broken)."""


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
                 on_step=None, on_eval=None, resume: str | None = None):
        """resume: a run directory to continue from its last checkpoint (`config` should be
        that run's; `Trainer.resuming(run_dir)` reads it for you)."""
        import torch
        self.config = config
        self.on_step, self.on_eval = on_step or (lambda m: None), on_eval or (lambda r: None)
        if config.model.threads:
            torch.set_num_threads(config.model.threads)
        torch.manual_seed(config.seed)
        self.checkpoint = latest_checkpoint(resume) if resume else None
        self.policy = policy or self._load_policy(str(self.checkpoint or config.model.name))
        self.renderer = ChatRenderer(self.policy.tokenizer, self.policy.eot_id, config.env.system_prompt,
                                     config.env.first_template, config.env.turn_template)
        n = max(config.rollout.groups_per_step * config.rollout.group_size, config.eval.episodes, 1)
        self._own_envs = envs is None
        self.envs = envs or self._make_envs(n)
        self.reference = self._make_reference() if config.algorithm.kl_coef > 0 else None
        if config.model.lora is not None:
            lora = config.model.lora
            self.policy.add_lora(config.model.name, lora.r, lora.alpha, lora.dropout,
                                 lora.target_modules)
        elif hasattr(self.policy, "freeze_below"):
            self.policy.freeze_below(config.optim.trainable_layers)
            if config.optim.keep_trunk:
                self.policy.keep_trunk()
        trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        groups = [{"params": trainable}]
        self.critic = None
        if config.algorithm.estimator == "ppo":
            from tumbler.train.critic import ValueHead
            self.critic = ValueHead.for_policy(self.policy)
            groups.append({"params": list(self.critic.parameters()), "lr": config.algorithm.critic_lr})
        self.optimizer = torch.optim.AdamW(groups, lr=config.optim.lr,
                                           weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.start_step, self._spent_before = 0, 0.0
        self.run_dir = RunDir(str(resume) if resume else config.run_dir, config.tensorboard)
        if self.checkpoint is not None:
            self._restore(self.checkpoint)
        else:
            self.run_dir.write_config(config)

    @classmethod
    def resuming(cls, run_dir: str, **kwargs) -> "Trainer":
        """A Trainer continuing `run_dir` from its last checkpoint, with the run's own config."""
        from tumbler.train.config import load_config
        latest_checkpoint(run_dir)     # not a run, or nothing to resume: say so before loading
        config = load_config(Path(run_dir) / "config.yaml", kwargs.pop("overrides", ()))
        return cls(config, resume=run_dir, **kwargs)

    def _load_policy(self, source: str) -> HFPolicy:
        m = self.config.model
        return HFPolicy.load(source, device=m.device, dtype=m.dtype, seed=self.config.seed,
                             reuse_cache=m.reuse_cache)

    def _restore(self, checkpoint: Path) -> None:
        """Optimizer, schedule, sampling RNG and step from `checkpoint`; the run's logs are cut
        back to that step (lines written after it belong to steps that will be played again)."""
        import torch
        state = torch.load(checkpoint / TRAINER_STATE, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.start_step, self._spent_before = state["step"], state["train_seconds"]
        self.run_dir.truncate(self.start_step)
        log.info("resuming %s from step %d (%s)", self.run_dir.path, self.start_step, checkpoint.name)

    # -- setup -------------------------------------------------------------------------------

    def _make_envs(self, n: int):
        env = self.config.env
        if self.config.mode == "agent":
            from tumbler.train.agentmode import make_pool
            return make_pool(n, self.config)
        if env.hosted:
            import os
            return EnvPool.hosted(env.id, n, image=env.image, step_timeout=env.step_timeout_s,
                                  format_penalty=env.format_penalty, server=env.server,
                                  token=env.server_token or os.environ.get("TUMBLER_TOKEN"),
                                  **env.kwargs)
        return EnvPool.in_process(env.id, n, format_penalty=env.format_penalty, **env.kwargs)

    def _make_reference(self):
        import copy
        # the frozen starting policy: on resume that is the model the run began with
        start = self._load_policy(self.config.model.name).model if self.checkpoint else self.policy.model
        reference = copy.deepcopy(start).eval()
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
        result = TrainResult(str(self.run_dir.path), self.start_step, 0.0)
        try:
            if self.start_step:
                result.history = self.run_dir.read("metrics")
                result.eval_before = next(iter(self.run_dir.read("eval")), None)
                for m in result.history:
                    self.on_step(m)
            else:
                result.eval_before = self.evaluate(step=0)
            self._started, self._eval_s = time.monotonic(), 0.0   # evaluations are not training
            for step in range(self.start_step + 1, cfg.steps + 1):
                metrics = self.train_step(step)
                result.history.append(metrics)
                result.steps = step
                self.run_dir.log("metrics", metrics)
                self.on_step(metrics)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save(f"step-{step:04d}", step)
                if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.steps:
                    self.evaluate(step)
                # stop before a step that would likely end past the limit (steps vary little)
                spent = self.train_seconds()
                if cfg.time_limit_s and spent + metrics["step_s"] > cfg.time_limit_s:
                    log.info("time limit of %.0f s: stopping after step %d (%.0f s spent)",
                             cfg.time_limit_s, step, spent)
                    break
            result.train_seconds = self.train_seconds()
            result.eval_after = self.evaluate(step=result.steps)
            if cfg.save_final:
                self.save("final", result.steps)
        except KeyboardInterrupt:
            log.warning("interrupted: saving the policy and the optimizer as they are")
            self.save("interrupted", result.steps)
            raise
        finally:
            result.plot = str(self.run_dir.plot())
            self.close()
        return result

    _eval_s = 0.0
    _started: float | None = None

    def train_seconds(self) -> float:
        """Seconds spent training in this run, earlier lives of a resumed run included."""
        if self._started is None:
            return self._spent_before
        return self._spent_before + time.monotonic() - self._started - self._eval_s

    def close(self) -> None:
        self.run_dir.close()
        if self._own_envs:
            self.envs.close()

    def _params(self, temperature: float) -> GenerationParams:
        r = self.config.rollout
        return GenerationParams(max_new_tokens=r.max_new_tokens, temperature=temperature, top_p=r.top_p)

    def _play(self, seeds, groups, temperature, stats):
        r = self.config.rollout
        episodes, stats = self.envs.play(self.policy, self.renderer, seeds, groups,
                                         self._params(temperature), max_turns=r.max_turns,
                                         turn_bonus=r.turn_bonus, stats=stats)
        if episodes and all(ep.error for ep in episodes):
            # nothing was played: a broken image, program or env, not bad luck; say so at once
            raise RolloutFailed(f"every one of {len(episodes)} episodes failed; the first: "
                                f"{episodes[0].error}")
        return episodes, stats

    def collect(self, step: int, stats: RolloutStats):
        """A step's episodes: groups with a failed episode replayed up to max_retries times and
        then dropped; with algorithm.dynamic_sampling, groups whose rewards are all equal (no
        gradient) replaced by groups of fresh seeds, up to max_resample_rounds times (DAPO).
        Returns (episodes, dropped group count, resampled group count)."""
        r, alg = self.config.rollout, self.config.algorithm
        first = self.config.seed + (step - 1) * r.groups_per_step
        kept, dropped = self._play_groups({g: first + g for g in range(r.groups_per_step)}, stats)
        resampled = 0
        for round_ in range(1, alg.max_resample_rounds + 1 if alg.dynamic_sampling else 1):
            uniform = _uniform_groups([ep.reward for ep in kept], [ep.group for ep in kept])
            if not uniform:
                break
            resampled += len(uniform)
            kept = [ep for ep in kept if ep.group not in uniform]
            # fresh seeds, apart from the steps' own and below the held-out ones
            base = self.config.seed + RESAMPLE_SEEDS + ((step - 1) * alg.max_resample_rounds
                                                        + round_ - 1) * r.groups_per_step
            more, lost = self._play_groups({g: base + g for g in sorted(uniform)}, stats)
            kept, dropped = kept + more, dropped + lost
        return kept, dropped, resampled

    def _play_groups(self, pending: dict[int, int], stats: RolloutStats):
        """Play group g at seed pending[g] (group_size episodes each), replaying groups with a
        failed episode up to max_retries times; returns (episodes, groups dropped)."""
        r = self.config.rollout
        kept = []
        for attempt in range(r.max_retries + 1):
            groups = [g for g in pending for _ in range(r.group_size)]
            episodes, _ = self._play([pending[g] for g in groups], groups, r.temperature, stats)
            failed = {ep.group for ep in episodes if ep.error}
            for ep in episodes:
                if ep.error:
                    log.warning("episode of seed %d failed: %s", ep.seed, ep.error)
            kept += [ep for ep in episodes if ep.group not in failed]
            pending = {g: pending[g] for g in failed}
            if not pending:
                break
        return kept, len(pending)

    def train_step(self, step: int) -> dict:
        import torch
        cfg, alg = self.config, self.config.algorithm
        t0 = time.monotonic()
        stats = RolloutStats()
        episodes, dropped, resampled = self.collect(step, stats)
        rollout_s = time.monotonic() - t0
        metrics = {"step": step, "episodes": len(episodes), "groups_dropped": dropped,
                   "groups_resampled": resampled,
                   "failed_episodes": stats.failed_episodes,
                   "rewritten_histories": stats.rewritten_histories,
                   "generation_calls": stats.generation_calls}
        metrics.update(_episode_metrics(episodes))
        t1 = time.monotonic()
        update = {"loss": 0.0, "grad_norm": 0.0, "trained_sequences": 0, "uniform_groups": 0}
        if episodes:
            batch = to_batch(episodes, self.policy.pad_id, self.policy.device)
            keep = torch.arange(len(batch), device=batch.rewards.device)
            uniform = _uniform_groups([ep.reward for ep in episodes], [ep.group for ep in episodes])
            update["uniform_groups"] = len(uniform)
            if self.critic is not None:
                # PPO: token advantages from the critic; a uniform group still teaches the critic
                critic = self.critic.advantages(
                    batch, lambda mb: self._logprobs(mb, with_hidden=True)[2], gamma=alg.gamma,
                    lam=alg.lam, micro_batches=packing.micro_batches(batch.group_index,
                                                                     cfg.optim.micro_batch_size))
                update.update(self._update(batch, critic[0], keep, critic=critic[1:]))
            else:
                rewards = torch.tensor([ep.reward for ep in episodes], device=keep.device)
                group_index = torch.tensor([ep.group for ep in episodes], device=keep.device)
                # per episode, then to its rows: an episode of several sequences counts once
                advantages = algorithms.compute_advantages(
                    rewards, group_index, estimator=alg.estimator, std_eps=alg.std_eps)[batch.episode_index]
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

    def _update(self, batch, advantages, keep, critic=None) -> dict:
        """One optimizer step over the rows in `keep`, in micro-batches; losses are weighted so
        the accumulated gradient equals that of the whole batch aggregated at once.

        advantages: [B] (one per row) or [B, T-1] (per token, PPO). critic: (old values,
        returns), each [B, T-1], to train the value head on (PPO)."""
        import torch
        cfg, alg = self.config, self.config.algorithm
        model = self.policy.model
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sub = batch.rows(keep)
        adv = advantages[keep]
        is_weights, is_metrics = None, {}
        if alg.importance_sampling != "off":
            sub, is_weights, is_metrics = self._importance(sub)
        total_tokens = float(sub.loss_mask.sum().clamp(min=1))
        total_rows = len(sub)
        scale = float(sub.loss_mask.shape[1]) if alg.loss_agg == "seq-mean-token-sum-norm" else None
        loss_sum, agg_metrics = 0.0, {}
        for index in packing.micro_batches(sub.group_index, cfg.optim.micro_batch_size):
            mb = sub.rows(index)
            width = mb.loss_mask.shape[1]
            mb_adv = adv[index] if adv.dim() == 1 else adv[index, :width]
            out = self._logprobs(mb, with_entropy=alg.entropy_coef != 0,
                                 with_hidden=critic is not None)
            logp, entropy = out[0], out[1]
            loss, pg_metrics = algorithms.policy_loss(
                logp, mb.old_logprobs, mb_adv, mb.loss_mask, clip_low=alg.clip_low,
                clip_high=alg.clip_high, dual_clip=alg.dual_clip, agg=alg.loss_agg, scale=scale,
                is_weights=None if is_weights is None else is_weights[index, :width])
            if self.reference is not None:
                with torch.no_grad():
                    ref_logits = self.reference(input_ids=mb.input_ids, attention_mask=mb.attention_mask,
                                                use_cache=False).logits[:, :-1].float()
                    ref_logits = ref_logits / (cfg.rollout.temperature or 1.0)
                    ref = torch.log_softmax(ref_logits, -1).gather(-1, mb.input_ids[:, 1:, None]).squeeze(-1)
                kl = algorithms.aggregate(algorithms.kl_penalty(logp, ref, kind="k3"), mb.loss_mask, alg.loss_agg, scale)
                loss = loss + alg.kl_coef * kl
                pg_metrics["kl"] = float(kl)
            if critic is not None:
                old_values, returns = (t[keep][index, :width] for t in critic)
                values = self.critic.values(out[2], mb.loss_mask > 0)
                vf, vf_metrics = algorithms.value_loss(values, old_values, returns, mb.loss_mask,
                                                       clip=alg.value_clip, agg=alg.loss_agg, scale=scale)
                loss = loss + alg.vf_coef * vf
                pg_metrics.update(vf_metrics)
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
        params = [p for p in model.parameters() if p.requires_grad]
        params += list(self.critic.parameters()) if self.critic is not None else []
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"the gradient norm became {grad_norm}; stopping")
        self.optimizer.step()
        self.scheduler.step()
        model.eval()
        return {"loss": loss_sum, "grad_norm": grad_norm, "trained_sequences": total_rows,
                **{f"pg/{k}": v for k, v in agg_metrics.items()}, **is_metrics}

    def _logprobs(self, mb, **kwargs):
        """token_logprobs of a micro-batch at its trained tokens, its groups packed by shared
        prefix when that saves tokens (optim.pack_prefix)."""
        positions = mb.loss_mask > 0
        pack = None
        if self.config.optim.pack_prefix and packing.supported(self.policy.model):
            pack = packing.pack(mb.input_ids, mb.attention_mask, positions, mb.group_index)
            pack = pack if pack.saved_tokens else None
        return self.policy.token_logprobs(mb.input_ids, mb.attention_mask, positions=positions,
                                          temperature=self.config.rollout.temperature or 1.0,
                                          pack=pack, trunk=mb.trunk, **kwargs)

    def _importance(self, sub):
        """The batch with the trainer's own old log-probs, and the truncated importance weights
        between them and the sampler's (plus how far apart the two were)."""
        import dataclasses

        import torch
        cfg, alg = self.config, self.config.algorithm
        trainer_old = torch.zeros_like(sub.old_logprobs)
        with torch.no_grad():
            for index in packing.micro_batches(sub.group_index, cfg.optim.micro_batch_size):
                logp, _ = self._logprobs(sub.rows(index))
                trainer_old[index, :logp.shape[1]] = logp
        weights = algorithms.importance_weights(trainer_old, sub.old_logprobs, sub.loss_mask,
                                                level=alg.importance_sampling, mode=alg.is_mode,
                                                low=alg.is_low, high=alg.is_high)
        m = sub.loss_mask > 0
        gap = (trainer_old - sub.old_logprobs)[m].abs()
        metrics = {"is/weight_mean": float(weights[m].mean()) if m.any() else 1.0,
                   "is/logprob_gap_max": float(gap.max()) if m.any() else 0.0}
        return dataclasses.replace(sub, old_logprobs=trainer_old), weights, metrics

    def evaluate(self, step: int) -> dict | None:
        """Held-out success: one episode per seed from eval.seed on (never a training seed)."""
        ev = self.config.eval
        if ev.episodes == 0:
            return None
        import torch
        t0 = time.monotonic()
        seeds = [ev.seed + i for i in range(ev.episodes)]
        # on a fork of the RNG: evaluating (or not, or more often) leaves the training curve as
        # it is, so a resumed run samples what the uninterrupted one would have
        with torch.random.fork_rng(devices=[]):
            episodes, stats = self._play(seeds, list(range(len(seeds))), ev.temperature, RolloutStats())
        record = {"step": step, **_episode_metrics(episodes), "failed_episodes": stats.failed_episodes,
                  "seconds": round(time.monotonic() - t0, 2)}
        self._eval_s += time.monotonic() - t0
        self.run_dir.log("eval", record)
        self.on_eval(record)
        return record

    def save(self, name: str, step: int) -> None:
        """The policy, optimizer, schedule and sampling RNG after `step` in
        run_dir/checkpoints/NAME (written aside, then renamed into place: a SIGKILL mid-write
        leaves the last checkpoint whole)."""
        import shutil

        import torch
        target = self.run_dir.path / "checkpoints" / name
        tmp = target.with_name(name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.policy.save(tmp)
        torch.save({"step": step, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "train_seconds": self.train_seconds(),
                    "critic": self.critic.state_dict() if self.critic is not None else None},
                   tmp / TRAINER_STATE)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        self._prune_checkpoints()

    def _prune_checkpoints(self) -> None:
        import shutil
        keep = self.config.keep_checkpoints
        steps = sorted((self.run_dir.path / "checkpoints").glob("step-*"))
        for old in steps[:-keep] if keep else ():
            if not old.name.endswith(".tmp"):
                shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir) -> Path:
    """The checkpoint of `run_dir` a resume starts from: the one after the most steps."""
    import torch
    root = Path(run_dir) / "checkpoints"
    if not (Path(run_dir) / "config.yaml").is_file():
        raise NotFound(f"{run_dir} is not a training run directory (no config.yaml)")
    found = []
    for path in root.glob("*") if root.is_dir() else ():
        if path.name.endswith(".tmp") or not (path / TRAINER_STATE).is_file():
            continue        # .tmp: a save a kill cut short
        found.append((torch.load(path / TRAINER_STATE, weights_only=False)["step"], path.name == "final", path))
    if not found:
        raise NotFound(f"{run_dir} has no checkpoint to resume from (set checkpoint_every)")
    step, final, path = max(found, key=lambda f: (f[0], f[1]))
    if final:
        raise Conflict(f"{run_dir} finished (checkpoints/final after step {step}); nothing to resume")
    return path


def _uniform_groups(rewards: list[float], group_index: list[int]) -> set[int]:
    groups: dict[int, set[float]] = {}
    for r, g in zip(rewards, group_index):
        groups.setdefault(g, set()).add(round(r, 9))
    return {g for g, values in groups.items() if len(values) == 1}


def _episode_metrics(episodes) -> dict:
    n = max(1, len(episodes))
    return {"reward_mean": round(sum(ep.reward for ep in episodes) / n, 4),
            "success_rate": round(sum(ep.success for ep in episodes) / n, 4),
            "turns_mean": round(sum(ep.turns for ep in episodes) / n, 3),
            "episodes_played": len(episodes)}
