"""Trainer throughput on the demo's config: generated tokens/s, env steps/s, seconds per phase
(generation, env, update) over a few training steps, and one rollout's generation time with
and without the per-episode KV cache kept across turns. Prints a table, writes JSON.

    .venv/bin/python bench/bench_train.py [--steps 3] [--config examples/train/guess.yaml] [--trl-seconds 120]

--trl-seconds S also runs TRL's GRPOTrainer and ours side by side on the single-turn form of the
same task for S seconds of training each (bench/trl_side.py), and reports the step-time ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def cache_comparison(cfg) -> dict:
    """The same rollout (same seeds, same torch seed) with and without cache reuse."""
    import torch
    from tumbler.train.chat import ChatRenderer
    from tumbler.train.policy import GenerationParams, HFPolicy
    from tumbler.train.rollout import EnvPool, rollout
    policy = HFPolicy.load(cfg.model.name)
    renderer = ChatRenderer(policy.tokenizer, policy.eot_id, cfg.env.system_prompt,
                            cfg.env.first_template, cfg.env.turn_template)
    r = cfg.rollout
    n = r.groups_per_step * r.group_size
    seeds = [g for g in range(r.groups_per_step) for _ in range(r.group_size)]
    out = {}
    with EnvPool.in_process(cfg.env.id, n, format_penalty=cfg.env.format_penalty, **cfg.env.kwargs) as envs:
        # each mode twice, alternating: the first rollout of a process pays one-off warm-up
        for reuse in (False, True, False, True):
            policy.reuse_cache = reuse
            torch.manual_seed(0)
            _, stats = rollout(policy, renderer, envs, seeds, seeds,
                               GenerationParams(r.max_new_tokens, r.temperature, r.top_p),
                               max_turns=r.max_turns)
            out["kv_cache_kept" if reuse else "full_prefill"] = {
                "generation_s": round(stats.generation_s, 2), "tokens": stats.generated_tokens}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="examples/train/guess.yaml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="bench/results/train.json")
    parser.add_argument("--trl-seconds", type=float, default=0,
                        help="also run TRL's GRPOTrainer side by side for this long (0: skip)")
    parser.add_argument("--trl-threads", type=int, default=1,
                        help="torch threads for both trainers in the side-by-side run")
    args = parser.parse_args()
    from tumbler.train.cli import passive_omp_threads
    passive_omp_threads()          # as `tumbler train` does, for both trainers
    import torch
    torch.set_num_threads(2)
    from tumbler.train import Trainer, load_config
    cfg = load_config(args.config, [f"steps={args.steps}", "eval.episodes=0", "save_final=false",
                                    "run_dir=/tmp/bench-train/{time}", "time_limit_s=null"])
    t0 = time.monotonic()
    trainer = Trainer(cfg)
    setup_s = time.monotonic() - t0
    result = trainer.run()
    h = result.history
    med = lambda key: round(statistics.median(m[key] for m in h), 2)
    figures = {"config": args.config, "steps": len(h), "setup_s": round(setup_s, 1),
               "step_s": med("step_s"), "generation_s": med("generation_s"), "env_s": med("env_s"),
               "update_s": med("update_s"),
               "tokens_per_s": round(sum(m["generated_tokens"] for m in h) / sum(m["generation_s"] for m in h), 1),
               "env_steps_per_s": round(sum(m["env_steps"] for m in h) / max(1e-9, sum(m["env_s"] for m in h)), 1),
               "episodes_per_step": h[0]["episodes"], "cache": cache_comparison(cfg)}
    if args.trl_seconds:
        import sys
        sys.path.insert(0, str(Path(__file__).parent))
        from trl_side import side_by_side
        figures["trl_side_by_side"] = side_by_side(args.config, args.trl_seconds, args.trl_threads)
    table = Table(title=f"trainer, {args.config}, median of {len(h)} steps")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
