"""Env-mode rollouts: GRPO groups of multi-turn episodes, every live episode's turn in one batch.

    envs = EnvPool.in_process("GuessTheNumber-v0", n=16, low=1, high=8)   # or EnvPool.hosted(...)
    episodes, stats = rollout(policy, renderer, envs, seeds=[7] * 8 + [9] * 8,
                              groups=[0] * 8 + [1] * 8, params=GenerationParams(max_new_tokens=16))

An episode's tokens are one sequence: the first prompt, then per turn the response (trained,
mask 1) and the next turn's tokens (mask 0). The episode's reward is the sum of the env's rewards
plus `turn_bonus` for each of the rollout's `max_turns` left unused on success. Env resets and steps run in a thread pool, so
sandbox-hosted envs wait in parallel.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams

log = logging.getLogger("tumbler.train.rollout")


@dataclass
class Episode:
    """One trajectory. token_ids/mask/logprobs are aligned: mask[i] = 1 for a generated token,
    whose sampler log-prob is logprobs[i] (0.0 elsewhere)."""

    seed: int
    group: int
    token_ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    success: bool = False
    turns: int = 0
    done: bool = False
    error: str | None = None
    transcript: list[dict] = field(default_factory=list)
    # sequences closed before the current one: (token_ids, mask, logprobs) each. An agent program
    # that rewrites its history (drops turns, edits a message) starts a new sequence.
    earlier: list[tuple[list[int], list[int], list[float]]] = field(default_factory=list)
    # the policy's frozen layers' output at token_ids[:len(trunk)] ([k, H]; HFBatch.trunk), so
    # the update runs only the trained layers; None when not kept
    trunk: object = None

    def extend(self, ids: list[int], trained: bool, logprobs: list[float] | None = None) -> None:
        self.token_ids += ids
        self.mask += [int(trained)] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)

    def restart(self) -> None:
        """Close the current sequence (kept for training) and begin an empty one."""
        if self.token_ids:
            self.earlier.append((self.token_ids, self.mask, self.logprobs))
        self.token_ids, self.mask, self.logprobs = [], [], []

    def sequences(self) -> list[tuple[list[int], list[int], list[float]]]:
        """Every sequence with at least one trained token, in order: the training samples."""
        every = [*self.earlier, (self.token_ids, self.mask, self.logprobs)]
        return [seq for seq in every if any(seq[1])]


@dataclass
class RolloutStats:
    """Counts and seconds of one rollout (generation and env time are wall-clock, seconds)."""

    generated_tokens: int = 0
    env_steps: int = 0
    generation_s: float = 0.0
    env_s: float = 0.0
    failed_episodes: int = 0
    rewritten_histories: int = 0    # agent mode: calls that did not extend the episode's sequence
    generation_calls: int = 0       # batched generations (env mode: turns; agent mode: waves)


class EnvPool:
    """`n` envs, reused across episodes: in-process (`tumbler.envs.make`) or one per sandbox."""

    def __init__(self, envs: list, sandboxes: list | None = None, workers: int = 16,
                 format_penalty: float | None = None):
        """format_penalty: wrap each env in ActionParser (replies without \\boxed{} earn it)."""
        if format_penalty is not None:
            from tumbler.envs.wrappers import ActionParser
            envs = [ActionParser(env, format_penalty=format_penalty) for env in envs]
        self.envs, self.sandboxes = envs, sandboxes or []
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(envs))),
                                       thread_name_prefix="rollout-env")

    @classmethod
    def in_process(cls, env_id: str, n: int, *, format_penalty: float | None = None,
                   **kwargs) -> "EnvPool":
        from tumbler import envs
        return cls([envs.make(env_id, **kwargs) for _ in range(n)], format_penalty=format_penalty)

    @classmethod
    def hosted(cls, env_id: str, n: int, *, image: str = "debian", step_timeout: float = 30.0,
               format_penalty: float | None = None, server: str | None = None,
               token: str | None = None, **kwargs) -> "EnvPool":
        """n sandboxes, each hosting one env (removed on close): on this machine, or made
        through the `tumbler serve` at `server` (token: its API token) — the envs drive either
        through the same sandbox handle."""
        from tumbler.envs.hosted import HostedEnv
        if server:
            from tumbler.sdk import Client
            client = Client(server, token)
            make = lambda _: client.create(image=image)      # noqa: E731
        else:
            from tumbler.local import LocalSandbox, default_runtime
            # one runtime for all: each new one sweeps orphaned sandboxes, and sweeps running
            # at once in several threads race on the same orphan's files
            runtime = default_runtime()
            make = lambda _: LocalSandbox(image=image, runtime=runtime)   # noqa: E731
        sandboxes: list = []
        try:
            with ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
                for sb in pool.map(make, range(n), timeout=300):
                    sandboxes.append(sb)
            envs = [HostedEnv(sb, env_id, step_timeout=step_timeout, **kwargs) for sb in sandboxes]
        except Exception:
            for sb in sandboxes:
                sb.remove()
            if server:
                client.close()
            raise
        pool = cls(envs, sandboxes, format_penalty=format_penalty)
        pool.client = client if server else None
        return pool

    client = None     # the server's SDK client, when the sandboxes came from one

    def __len__(self) -> int:
        return len(self.envs)

    def play(self, policy, renderer: ChatRenderer, seeds: list[int], groups: list[int],
             params: GenerationParams, **kwargs) -> tuple[list["Episode"], RolloutStats]:
        """`rollout` on this pool (the trainer calls every pool, env or agent, this way)."""
        return rollout(policy, renderer, self, seeds, groups, params, **kwargs)

    def map(self, fn, indices: list[int]) -> list:
        """fn(envs[i], i) for each i in `indices`, concurrently; an exception comes back as the
        value (episode i always plays on env i)."""
        def guarded(i):
            try:
                return fn(self.envs[i], i)
            except Exception as exc:   # one failing env must not stop the others' episodes
                return exc
        futures = [self.pool.submit(guarded, i) for i in indices]
        # every env call is bounded by its own timeout (hosted envs: step_timeout)
        return [f.result() for f in futures]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for env in self.envs:
            try:
                env.close()
            except Exception as exc:
                log.info("closing an env failed: %s", exc)
        remove_all(self.sandboxes)
        if self.client is not None:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_all(sandboxes) -> None:
    """Remove each sandbox; one that fails is logged and the rest still go."""
    for sb in sandboxes:
        try:
            sb.remove()
        except Exception as exc:
            log.warning("removing sandbox %s failed: %s", sb.id, exc)


def rollout(policy, renderer: ChatRenderer, envs: EnvPool, seeds: list[int], groups: list[int],
            params: GenerationParams, max_turns: int = 10, turn_bonus: float = 0.0,
            stats: RolloutStats | None = None) -> tuple[list[Episode], RolloutStats]:
    """Play one episode per seed, env i for episode i (len(seeds) <= len(envs)).

    An episode whose env raised, or whose hosted env reported an error, has `error` set."""
    if len(seeds) > len(envs):
        raise ValueError(f"{len(seeds)} episodes need as many envs, the pool has {len(envs)}")
    stats = stats or RolloutStats()
    episodes = [Episode(seed=s, group=g) for s, g in zip(seeds, groups)]
    started = time.monotonic()
    resets = envs.map(lambda env, i: env.reset(seed=episodes[i].seed), list(range(len(episodes))))
    stats.env_s += time.monotonic() - started
    for ep, result in zip(episodes, resets):
        if isinstance(result, Exception):
            ep.error, ep.done = f"reset: {result}", True
        else:
            ep.extend(renderer.first_turn(str(result[0])), trained=False)
            ep.transcript.append({"role": "user", "content": str(result[0])})
    batch = policy.open_batch(len(episodes))
    try:
        for _ in range(max_turns):
            live = [i for i, ep in enumerate(episodes) if not ep.done]
            if not live:
                break
            t0 = time.monotonic()
            outs = batch.generate({i: episodes[i].token_ids for i in live}, params)
            stats.generation_s += time.monotonic() - t0
            stats.generation_calls += 1
            for i in live:
                ep, out = episodes[i], outs[i]
                ep.extend(out.token_ids, trained=True, logprobs=out.logprobs)
                ep.transcript.append({"role": "assistant", "content": out.text})
                stats.generated_tokens += len(out.token_ids)
            t0 = time.monotonic()
            steps = envs.map(lambda env, i: env.step(outs[i].text), live)
            stats.env_s += time.monotonic() - t0
            stats.env_steps += len(live)
            for i, result in zip(live, steps):
                _record_step(episodes[i], result, outs[i].stopped, renderer, turn_bonus, max_turns)
        for i, ep in enumerate(episodes):
            ep.done = True     # out of turns: what was played is the episode
            ep.trunk = batch.trunk(i) if hasattr(batch, "trunk") else None
    finally:
        batch.close()
    stats.failed_episodes += sum(ep.error is not None for ep in episodes)
    return episodes, stats


def _record_step(ep: Episode, result, stopped: bool, renderer: ChatRenderer, turn_bonus: float,
                 max_turns: int) -> None:
    ep.turns += 1
    if isinstance(result, Exception):
        ep.error, ep.done = f"step: {result}", True
        return
    obs, reward, terminated, truncated, info = result
    if info.get("error"):
        ep.error, ep.done = f"step: {info['error']}", True
        return
    ep.reward += float(reward)
    ep.transcript.append({"role": "user", "content": str(obs)})
    if terminated or truncated:
        ep.success = bool(info.get("success"))
        if ep.success and turn_bonus:
            ep.reward += turn_bonus * max(0, max_turns - ep.turns)
        ep.done = True
        return
    ep.extend(renderer.next_turn(str(obs), stopped), trained=False)
