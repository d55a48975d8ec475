"""Tumbler's trainer and TRL's GRPOTrainer side by side, in one process, on the same task.

The task is single-turn (TRL's GRPOTrainer generates one completion per prompt): the demo's
GuessTheNumber 1-4 with one guess, the demo's prompt, rendered by the same chat template; the
reward is the env's own (1 for the number, -0.1 for a reply without \\boxed{}). Same model
(SmolLM2-135M-Instruct), same top layers trained, same group size, completions per step, token
limit, temperature, learning rate and loss aggregation (token-mean: TRL's "dapo"), no reference
model, no gradient checkpointing, in float32 on this CPU. Each trainer runs for the same wall time;
the figures are seconds per step and the mean training reward of the steps in that time.
"""
from __future__ import annotations

import time

SINGLE_TURN = ["env.kwargs.max_turns=1", "rollout.max_turns=1", "rollout.turn_bonus=0",
               "env.hosted=false", "eval.episodes=0", "save_final=false", "time_limit_s=null",
               "run_dir=/tmp/bench-train-side/{time}"]


def ours(config_path: str, seconds: float, threads: int) -> dict:
    from tumbler.train import Trainer, load_config
    cfg = load_config(config_path, SINGLE_TURN + ["steps=1000", f"time_limit_s={seconds}",
                                                  f"model.threads={threads}"])
    cpu = [time.process_time()]
    trainer = Trainer(cfg, on_step=lambda m: cpu.append(time.process_time()))
    cpu[0] = time.process_time()
    result = trainer.run()
    h = result.history
    return {"steps": len(h), "step_s": round(result.train_seconds / len(h), 2),
            "step_cpu_s": round((cpu[-1] - cpu[0]) / len(h), 2),
            "reward_mean": round(sum(m["reward_mean"] for m in h) / len(h), 3),
            "rewards": [m["reward_mean"] for m in h]}


def trl(config_path: str, seconds: float, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tumbler import envs
    from tumbler.train import load_config, models
    cfg = load_config(config_path, SINGLE_TURN)
    r, e = cfg.rollout, cfg.env
    source = models.resolve(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    _freeze_below(model, cfg.optim.trainable_layers)

    game = envs.make(e.id, **e.kwargs)
    rows = []
    for seed in range(2000):
        obs, _ = game.reset(seed=seed)
        user = e.first_template.replace("{obs}", obs)
        rows.append({"prompt": [{"role": "system", "content": e.system_prompt},
                                {"role": "user", "content": user}], "seed": seed})

    def reward(completions, seed, **_):
        out = []
        for completion, s in zip(completions, seed):
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            env = envs.make(e.id, **e.kwargs)
            if e.format_penalty is not None:
                from tumbler.envs.wrappers import ActionParser
                env = ActionParser(env, format_penalty=e.format_penalty)
            env.reset(seed=s)
            out.append(float(env.step(text)[1]))
        return out

    times, cpu_times, rewards = [], [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.monotonic(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.monotonic() - self.t0)
            cpu_times.append(time.process_time() - self.c0)
            if sum(times) >= seconds:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])

    n = r.groups_per_step * r.group_size
    args = GRPOConfig(output_dir="/tmp/bench-train-side/trl", per_device_train_batch_size=n,
                      gradient_accumulation_steps=1, num_generations=r.group_size,
                      max_completion_length=r.max_new_tokens, temperature=r.temperature,
                      learning_rate=cfg.optim.lr, lr_scheduler_type="constant", beta=0.0,
                      loss_type="dapo", max_grad_norm=cfg.optim.max_grad_norm,
                      gradient_checkpointing=False, use_cpu=True, bf16=False, logging_steps=1,
                      report_to="none", save_strategy="no", max_steps=1000, seed=cfg.seed,
                      dataloader_num_workers=0)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          callbacks=[Clock()])
    trainer.train()
    steps = len(times)
    return {"steps": steps, "step_s": round(sum(times) / max(1, steps), 2),
            "step_cpu_s": round(sum(cpu_times) / max(1, steps), 2),
            "reward_mean": round(sum(rewards) / max(1, len(rewards)), 3), "rewards": rewards}


def _freeze_below(model, layers: int | None) -> None:
    if layers is None:
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in list(model.model.layers)[-layers:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in model.model.norm.parameters():
        p.requires_grad_(True)


def side_by_side(config_path: str, seconds: float, threads: int = 1) -> dict:
    """Both trainers, TRL first, each for `seconds` of training on `threads` torch threads;
    ratios are TRL's time over ours. One thread by default: on a shared machine a second
    thread that loses its core stalls every parallel kernel, so wall times then measure the
    neighbours; CPU seconds per step stay a property of the trainer."""
    theirs = trl(config_path, seconds, threads)
    mine = ours(config_path, seconds, threads)
    return {"seconds_each": seconds, "threads": threads, "tumbler": mine, "trl": theirs,
            "step_speedup": round(theirs["step_s"] / max(mine["step_s"], 1e-9), 2),
            # CPU seconds per step: what each step costs, whatever else the machine runs
            "step_cpu_speedup": round(theirs["step_cpu_s"] / max(mine["step_cpu_s"], 1e-9), 2)}
