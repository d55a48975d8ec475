"""Agent-mode rollouts: an unmodified agent program in each sandbox calls the model service, and
the trainer answers every call with the policy, keeping the exact tokens.

    pool = AgentPool(n=16, agent=cfg.agent, env=cfg.env)      # sandboxes with the endpoint on
    episodes, stats = pool.play(policy, renderer, seeds, groups, params, max_turns=3)

Each episode is one run of `agent.command` (with `{seed}` filled in) in a sandbox of its own.
Calls are answered in waves: once every running program is waiting on a call (or `agent.wave_s`
seconds after the first one came), all waiting calls are generated in one batch.

Tokens: a call whose messages are the previous call's messages, then the reply we gave, then new
messages, continues the episode's sequence: its previous prompt and response ids are kept
verbatim and only the new messages are rendered (the same rule as env mode). Any other call (the
program dropped or edited turns) starts a new sequence of the same episode, rendered whole, and
is counted as `rewritten_histories`.

Tool calls: when a call offers `tools`, the policy's reply is read in the Hermes text format
(`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, tumbler.train.toolcalls) and the
program gets OpenAI `tool_calls`; the trained tokens are still exactly the generated ones.

Rewards are computed on the host, never read from the sandbox: "replay" plays the replies the
policy gave, in order, through a fresh copy of `env.id` at the episode's seed (the program's own
game, run where the program cannot touch it); or a function `module:name` called as
`fn(seed=, replies=, ended=)` returning `(reward, success)`. With `agent.tasks` each episode is a
trial of a task instead, rewarded by the task's verifier (tumbler.train.taskmode.TaskPool).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from tumbler.agent.envgames.base import BOXED
from tumbler.errors import InvalidRequest, TumblerError
from tumbler.train import toolcalls
from tumbler.train.chat import ChatRenderer
from tumbler.train.policy import GenerationParams
from tumbler.train.rollout import Episode, RolloutStats, remove_all

log = logging.getLogger("tumbler.train.agent")

END_SLACK_S = 30.0        # seconds past an episode's own timeout before the rollout gives up on it
OUTPUT_TAIL = 400         # characters of a failed program's output kept in its error


@dataclass
class _Playing:
    """The trainer's side of one running episode."""

    sandbox_id: str
    episode_id: str
    running: bool = True
    history: list[dict] | None = None     # the last call's messages plus the reply we gave
    stopped: bool = True                  # whether that reply ended with the end-of-turn token
    replies: list[str] = field(default_factory=list)
    ended: object = None                  # the EpisodeEnded event
    timeout_s: float | None = None        # the program's own limit, seconds
    sandbox: object = None                # task mode: the episode's own sandbox, and its task
    task: object = None
    image_config: object = None


class EpisodeFailed(Exception):
    """An episode's failure, said in its own words (the reward could not be had)."""


def make_pool(n: int, config, *, runtime=None):
    """The agent-mode pool of a TrainConfig: a TaskPool with agent.tasks, else an AgentPool."""
    if config.agent.tasks:
        from tumbler.train.taskmode import TaskPool
        return TaskPool(n, config.agent, heldout_seed=config.eval.seed, runtime=runtime)
    return AgentPool(n, config.agent, config.env, runtime=runtime)


class AgentPool:
    """`n` sandboxes of `agent.image`, each with the agent's files and its model endpoint on.

    agent: the config's AgentConfig; env: its EnvConfig (the game "replay" rewards with)."""

    def __init__(self, n: int, agent, env, *, runtime=None):
        """With agent.server the sandboxes are that server's (tumbler.Sandbox): the bridge
        reaches their endpoints through its model routes."""
        from concurrent.futures import ThreadPoolExecutor

        from tumbler.modelservice import ModelBridge
        self.agent, self.env = agent, env
        self.reward_fn = _reward_function(agent.reward or "replay", env)
        files = _check_files(agent.files)
        self.client = None
        if agent.server:
            import os

            from tumbler.sdk import Client
            self.client = Client(agent.server, agent.server_token or os.environ.get("TUMBLER_TOKEN"))
            make = lambda _: self.client.create(image=agent.image)       # noqa: E731
        else:
            from tumbler.local import LocalSandbox, default_runtime
            runtime = runtime or default_runtime()
            make = lambda _: LocalSandbox(image=agent.image, runtime=runtime)   # noqa: E731
        self.sandboxes: list = []
        self.bridge = ModelBridge(call_timeout_s=agent.timeout_s + END_SLACK_S)
        try:
            with ThreadPoolExecutor(max_workers=min(n, 8)) as pool:
                self.sandboxes.extend(pool.map(make, range(n), timeout=300))
            for sb in self.sandboxes:
                for target, source in files.items():
                    sb.write_file(target, source.read_bytes())
                self.bridge.attach(sb)
        except Exception:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.sandboxes)

    def play(self, policy, renderer: ChatRenderer, seeds: list[int], groups: list[int],
             params: GenerationParams, max_turns: int = 10, turn_bonus: float = 0.0,
             stats: RolloutStats | None = None) -> tuple[list[Episode], RolloutStats]:
        """One episode per seed, episode i in sandbox i (len(seeds) <= len(self))."""
        if len(seeds) > len(self):
            raise ValueError(f"{len(seeds)} episodes need as many sandboxes, the pool has {len(self)}")
        stats = stats or RolloutStats()
        episodes = [Episode(seed=s, group=g) for s, g in zip(seeds, groups)]
        started, generating = time.monotonic(), stats.generation_s
        self._forget_ended()
        playing = self._start(episodes)
        generator = _Generator(policy)
        try:
            self._serve(episodes, playing, generator, renderer, params, max_turns, stats)
        except BaseException:
            for p in playing:           # no program outlives a rollout that failed (Ctrl-C too)
                if p.running:
                    self._stop(p)
            raise
        finally:
            generator.close()
        # the programs' own time (their env steps, start-up, HTTP): the rollout less generation
        stats.env_s += time.monotonic() - started - (stats.generation_s - generating)
        stats.env_steps += sum(ep.turns for ep in episodes)
        self._score_all(episodes, playing, turn_bonus, max_turns)
        stats.failed_episodes += sum(ep.error is not None for ep in episodes)
        return episodes, stats

    def _start(self, episodes: list[Episode]) -> list[_Playing]:
        playing = []
        for ep, sb in zip(episodes, self.sandboxes):
            argv = [part.replace("{seed}", str(ep.seed)) for part in self.agent.command]
            episode_id = self.bridge.start_episode(sb.id, argv, timeout_s=self.agent.timeout_s,
                                                   cwd=self.agent.cwd)
            playing.append(_Playing(sb.id, episode_id, timeout_s=self.agent.timeout_s))
        return playing

    def _serve(self, episodes, playing, generator, renderer, params, max_turns, stats) -> None:
        from tumbler.modelservice import EpisodeEnded, ModelCall, SandboxDetached
        index = {(p.sandbox_id, p.episode_id): i for i, p in enumerate(playing)}
        pending: dict[int, object] = {}
        first_at = None
        deadline = time.monotonic() + self.agent.timeout_s + END_SLACK_S
        while any(p.running for p in playing):
            now = time.monotonic()
            if now > deadline:
                for i, p in enumerate(playing):
                    if p.running:
                        episodes[i].error, p.running = "the agent program never ended", False
                        self._stop(p)
                break
            wait = (first_at + self.agent.wave_s - now) if pending else deadline - now
            event = self._next(max(wait, 0.001))
            if isinstance(event, ModelCall):
                i = index.get((event.sandbox_id, event.episode_id))
                if i is None or not playing[i].running:
                    event.fail("this call belongs to no episode of the trainer", status=400)
                elif episodes[i].turns >= max_turns:
                    event.fail(f"the episode's turn limit ({max_turns}) is reached", status=400)
                    self._stop(playing[i])
                else:
                    pending[i] = event
                    first_at = first_at or time.monotonic()
            elif isinstance(event, EpisodeEnded):
                i = index.get((event.sandbox_id, event.episode_id))
                if i is not None:
                    playing[i].running, playing[i].ended = False, event
                    pending.pop(i, None)
            elif isinstance(event, SandboxDetached):
                for i, p in enumerate(playing):
                    if p.sandbox_id == event.sandbox_id and p.running:
                        p.running, episodes[i].error = False, f"sandbox lost: {event.reason}"
                        pending.pop(i, None)
            waiting = [i for i, p in enumerate(playing) if p.running]
            due = first_at is not None and time.monotonic() >= first_at + self.agent.wave_s
            if pending and (due or set(pending) >= set(waiting)):
                self._answer(pending, episodes, playing, generator, renderer, params, stats)
                pending, first_at = {}, None

    def _next(self, timeout_s: float):
        try:
            return self.bridge.next_event(timeout_s)
        except TimeoutError:
            return None

    def _answer(self, pending, episodes, playing, generator, renderer, params, stats) -> None:
        prompts = {i: self._prompt(episodes[i], playing[i], call, renderer, stats)
                   for i, call in pending.items()}
        t0 = time.monotonic()
        outs = generator.generate(prompts, params)
        stats.generation_s += time.monotonic() - t0
        stats.generation_calls += 1
        for i, call in pending.items():
            ep, p, out = episodes[i], playing[i], outs[i]
            ep.extend(out.token_ids, trained=True, logprobs=out.logprobs)
            ep.turns += 1
            ep.transcript += [call.messages[-1], {"role": "assistant", "content": out.text}]
            stats.generated_tokens += len(out.token_ids)
            tools = call.request.get("tools") if self.agent.tool_format == "hermes" else None
            content, calls = toolcalls.parse(out.text, tools) if tools else (out.text, [])
            reply = {"role": "assistant", "content": content}
            if calls:
                reply["tool_calls"] = calls
            p.history = [*call.messages, reply]
            p.stopped = out.stopped
            p.replies.append(out.text)
            call.respond(content, tool_calls=calls or None, token_ids=out.token_ids,
                         logprobs=out.logprobs, finish_reason="tool_calls" if calls else
                         "stop" if out.stopped else "length")

    def _prompt(self, ep: Episode, p: _Playing, call, renderer, stats) -> list[int]:
        """The episode's token list for this call: continued when the call extends the last
        one's messages and our reply, else a new sequence."""
        messages = call.messages
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("a chat call without messages")
        seen = p.history
        if seen is not None and len(messages) > len(seen) and \
                [_key(m) for m in messages[:len(seen)]] == [_key(m) for m in seen]:
            new = [toolcalls.as_text(m) for m in messages[len(seen):]]
            ep.extend(renderer.continuation(new, p.stopped), trained=False)
        else:
            if seen is not None:
                stats.rewritten_histories += 1
            ep.restart()
            tools = call.request.get("tools") if self.agent.tool_format == "hermes" else None
            chat, template_tools = toolcalls.for_template(
                messages, tools, getattr(renderer.tokenizer, "chat_template", None))
            ep.extend(renderer.full_render(chat, tools=template_tools), trained=False)
        return ep.token_ids

    def _forget_ended(self) -> None:
        """The last rollout's episodes hold what training needs of its calls: the bridge's
        records of them go (kept, a long run's memory would grow by every call it answered;
        the last rollout's stay readable until the next)."""
        try:
            self.bridge.forget_ended()
        except TumblerError as exc:
            log.info("dropping ended trajectories: %s", exc)

    def _stop(self, p: _Playing) -> None:
        try:
            self.bridge.stop_episode(p.sandbox_id, p.episode_id)
        except TumblerError as exc:
            log.info("stopping episode %s: %s", p.episode_id, exc)

    def _score_all(self, episodes, playing, turn_bonus: float, max_turns: int) -> None:
        for ep, p in zip(episodes, playing):
            self._score(ep, p, turn_bonus, max_turns)

    def _score(self, ep: Episode, p: _Playing, turn_bonus: float, max_turns: int) -> None:
        ep.done = True
        ended = p.ended
        if ep.error is None and ended is not None and ended.reason == "timeout":
            ep.error = f"the agent program ran past its {p.timeout_s or self.agent.timeout_s:.0f} s"
        if ep.error is None and not p.replies:
            tail = (ended.output if ended is not None else "")[-OUTPUT_TAIL:]
            code = ended.exit_code if ended is not None else None
            ep.error = f"the agent program exited ({code}) before any model call: {tail}"
        if ep.error is not None:
            return
        try:
            reward, success = self._reward(ep, p)
        except EpisodeFailed as exc:
            ep.error = str(exc)
            return
        except Exception as exc:    # a broken reward function is this episode's failure, logged
            ep.error = f"reward: {type(exc).__name__}: {exc}"
            return
        ep.reward, ep.success = float(reward), bool(success)
        if ep.success and turn_bonus:
            ep.reward += turn_bonus * max(0, max_turns - ep.turns)

    def _reward(self, ep: Episode, p: _Playing) -> tuple[float, bool]:
        return self.reward_fn(seed=ep.seed, replies=list(p.replies), ended=p.ended)

    def close(self) -> None:
        try:
            self.bridge.close()
        except Exception as exc:
            log.info("closing the model bridge: %s", exc)
        remove_all(self.sandboxes)
        self.sandboxes = []
        if self.client is not None:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Generator:
    """Generation batches for calls that arrive in waves: an episode stays in the batch whose KV
    cache holds its tokens while each of its calls extends them; one that missed a wave or
    rewrote its history is generated in a new batch (prefilled whole)."""

    def __init__(self, policy):
        self.policy = policy
        self.slot: dict[int, tuple[object, int]] = {}      # episode -> (batch, row in it)
        self.batches: list = []

    def generate(self, prompts: dict[int, list[int]], params: GenerationParams) -> dict:
        by_batch: dict[int, dict[int, list[int]]] = {}
        fresh: list[int] = []
        for ep, ids in prompts.items():
            batch, row = self.slot.get(ep, (None, None))
            fed = getattr(batch, "fed", {}).get(row) if batch is not None else None
            if batch is not None and fed is not None and ids[:len(fed)] == fed and len(ids) > len(fed):
                by_batch.setdefault(id(batch), {})[row] = ids
            else:
                fresh.append(ep)
        outs = {}
        for batch in list(self.batches):
            asked = by_batch.get(id(batch), {})
            back = {row: ep for ep, (b, row) in self.slot.items() if b is batch}
            for row, ep in back.items():          # rows not asked now leave this batch's cache
                if row not in asked:
                    del self.slot[ep]
            if not asked:
                batch.close()
                self.batches.remove(batch)
                continue
            for row, out in batch.generate(asked, params).items():
                outs[back[row]] = out
        if fresh:
            batch = self.policy.open_batch(len(fresh))
            self.batches.append(batch)
            for row, ep in enumerate(fresh):
                self.slot[ep] = (batch, row)
            for row, out in batch.generate({r: prompts[ep] for r, ep in enumerate(fresh)}, params).items():
                outs[fresh[row]] = out
        return outs

    def close(self) -> None:
        for batch in self.batches:
            batch.close()
        self.batches, self.slot = [], {}


_key = toolcalls.message_key


def _check_files(files: dict[str, str]) -> dict[str, Path]:
    out = {}
    for target, source in files.items():
        path = Path(source).expanduser()
        if not path.is_file():
            raise InvalidRequest(f"agent.files: {source!r} (for {target}) is not a file")
        if not target.startswith("/"):
            raise InvalidRequest(f"agent.files: the sandbox path {target!r} must be absolute")
        out[target] = path
    return out


def _reward_function(spec: str, env):
    if spec == "replay":
        return _Replay(env.id, env.kwargs, env.format_penalty)
    from tumbler import dotted
    return dotted.load(spec, "agent.reward (use 'replay' or 'module:function')")


class _Replay:
    """The reward of the program's own game, recomputed here: the policy's replies, in order,
    stepped through a fresh `env_id` at the episode's seed; plus `format_penalty` for each reply
    without a \\boxed{...} action (env.format_penalty, as in env mode)."""

    def __init__(self, env_id: str, kwargs: dict, format_penalty: float | None = None):
        from tumbler import envs
        self.make = lambda: envs.make(env_id, **kwargs)
        self.format_penalty = format_penalty or 0.0
        self.make().close()            # a bad id or argument fails at setup, not mid-run

    def __call__(self, *, seed: int, replies: list[str], ended) -> tuple[float, bool]:
        env = self.make()
        try:
            env.reset(seed=seed)
            reward, success = 0.0, False
            for reply in replies:
                _, r, terminated, truncated, info = env.step(reply)
                reward += float(r) + (0.0 if BOXED.search(reply) else self.format_penalty)
                if terminated or truncated:
                    success = bool(info.get("success"))
                    break
            return reward, success
        finally:
            env.close()
