"""Agent mode on task sets: each episode is one trial of a task, rewarded by its verifier.

    pool = TaskPool(16, cfg.agent, heldout_seed=cfg.eval.seed)    # `mode: agent` + `agent.tasks`
    episodes, stats = pool.play(policy, renderer, seeds, groups, params, max_turns=8)

An episode is what `tumbler tasks run` does for one trial (tumbler.tasks.trial): the task's
image (built once per task, cached by step) with `agent.program` installed on top
(tumbler.agents), a sandbox of it with the task's limits, the program started on the task's
instruction as a model-service episode; its model calls are answered by the policy (AgentPool:
waves, token-exact continuation, rewritten histories, turn limit, timeout), and once it has
ended the task's verifier runs on a pruned copy of the sandbox (tumbler.tasks.verify): its
reward is the episode's. Nothing the program writes or says counts.

Seeds pick tasks. Training seeds (below `heldout_seed`, the config's eval.seed) go through the
training tasks in a fresh shuffled order every len(train) seeds (seed // len(train) seeds the
shuffle), so a GRPO group (one seed, group_size episodes) is one task played group_size times
and each task comes once per pass; held-out seeds (from `heldout_seed` on: the evaluation's)
go through the held-out tasks in order. The split: `agent.heldout` ids, or else the
`heldout_fraction` of tasks first by sha256 of their id.

A task whose image does not build, a sandbox that cannot be made, a program that crashes
before its first call or runs past its time, and a verifier that crashes or gives no reward
make a failed episode (its error says which: build_error, trial_error, verifier_error...),
counted and retried as any other; the run goes on.
"""
from __future__ import annotations

import hashlib
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor

from tumbler.errors import InvalidRequest, TumblerError
from tumbler.train.agentmode import END_SLACK_S, AgentPool, EpisodeFailed, _check_files, _Playing
from tumbler.train.rollout import remove_all

log = logging.getLogger("tumbler.train.tasks")

WORKERS = 8          # sandboxes made (and verifiers run) at once


def split_tasks(tasks: list, heldout: list[str], fraction: float) -> tuple[list, list]:
    """(training tasks, held-out tasks): the `heldout` ids, or else round(fraction * N) tasks
    (at least one when fraction > 0 and N >= 2) first in sha256 order of their ids."""
    ids = [t.id for t in tasks]
    if heldout:
        missing = [i for i in heldout if i not in ids]
        if missing:
            raise InvalidRequest(f"agent.heldout: no task {', '.join(missing)} in the set; it "
                                 f"has {', '.join(ids)}")
        held = set(heldout)
    else:
        k = round(len(tasks) * fraction)
        if fraction > 0 and len(tasks) >= 2:
            k = min(max(k, 1), len(tasks) - 1)
        ranked = sorted(ids, key=lambda i: hashlib.sha256(i.encode()).hexdigest())
        held = set(ranked[:k])
    train = [t for t in tasks if t.id not in held]
    if not train:
        raise InvalidRequest("agent.heldout holds every task of the set: none is left to train on")
    return train, [t for t in tasks if t.id in held]


class TaskPool(AgentPool):
    """Up to `n` trials at once of `agent.tasks` with `agent.program` (see the module)."""

    def __init__(self, n: int, agent, *, heldout_seed: int = 1_000_000, runtime=None):
        from tumbler.agents import ProgramAgent, load_program
        from tumbler.local import default_runtime
        from tumbler.tasks.loader import load_tasks
        from tumbler.tasks.verify import sweep_stale
        self.agent, self.env, self.n = agent, None, n
        self.runtime = runtime or default_runtime()
        self.program = load_program(agent.program)
        self.installer = ProgramAgent(self.program, None)     # its prepare_image installs it
        self.files = _check_files(agent.files)
        tasks = load_tasks(agent.tasks, agent.task_ids or None)
        self.train, self.heldout = split_tasks(tasks, agent.heldout, agent.heldout_fraction)
        self.heldout_seed = heldout_seed
        log.info("tasks of %s: training on %s; held out: %s", agent.tasks,
                 ", ".join(t.id for t in self.train), ", ".join(t.id for t in self.heldout) or "none")
        self.client, self.bridge, self.sandboxes = None, None, []
        self.results: list[dict] = []     # the last play's, one per episode
        self._images: dict[str, object] = {}
        self._build_lock, self._lock = threading.Lock(), threading.Lock()
        sweep_stale(self.runtime.images)

    def __len__(self) -> int:
        return self.n

    def task_of(self, seed: int):
        """The task seed `seed` plays (see the module)."""
        if seed >= self.heldout_seed and self.heldout:
            return self.heldout[(seed - self.heldout_seed) % len(self.heldout)]
        epoch, i = divmod(seed, len(self.train))
        order = list(range(len(self.train)))
        random.Random(epoch).shuffle(order)
        return self.train[order[i]]

    def play(self, policy, renderer, seeds, groups, params, max_turns: int = 10,
             turn_bonus: float = 0.0, stats=None):
        """As AgentPool.play; every episode in a sandbox of its own, removed afterwards."""
        from tumbler.modelservice import ModelBridge
        self.bridge = ModelBridge(call_timeout_s=self.agent.timeout_s + END_SLACK_S,
                                  models=(self.program.model,))
        try:
            return super().play(policy, renderer, seeds, groups, params, max_turns=max_turns,
                                turn_bonus=turn_bonus, stats=stats)
        finally:
            self._release()

    def _start(self, episodes) -> list[_Playing]:
        with ThreadPoolExecutor(max_workers=max(1, min(len(episodes), WORKERS))) as pool:
            return list(pool.map(self._start_one, episodes))

    def _start_one(self, ep) -> _Playing:
        from tumbler.agents.program import start_program
        from tumbler.tasks.trial import trial_sandbox
        task = self.task_of(ep.seed)
        idle = _Playing(None, None, running=False, task=task)
        try:
            image, config = self._image(task)
        except TumblerError as exc:
            ep.error = f"build_error: task {task.id}: {exc}"
            return idle
        timeout = self.agent.timeout_s      # waiting on the policy included: not the task's own
        try:
            sb = trial_sandbox(task, image, config, self.runtime)
            with self._lock:
                self.sandboxes.append(sb)
            for target, source in self.files.items():
                sb.write_file(target, source.read_bytes())
            self.bridge.attach(sb)
            episode_id = start_program(self.program, self.bridge, sb, task, timeout)
        except TumblerError as exc:
            ep.error = f"trial_error: task {task.id}: {exc}"
            return idle
        return _Playing(sb.id, episode_id, timeout_s=timeout, sandbox=sb, task=task,
                        image_config=config)

    def _image(self, task):
        """The task's image with the program installed: built on first use, then kept (a
        build that failed fails every episode of the task, without building again)."""
        from tumbler.tasks.trial import trial_image
        with self._build_lock:
            if task.id not in self._images:
                log.info("building the image of task %s with %s", task.id, self.program.name)
                try:
                    self._images[task.id] = trial_image(task, self.installer, self.runtime)
                except TumblerError as exc:
                    log.warning("the image of task %s did not build: %s", task.id, exc)
                    self._images[task.id] = exc
            got = self._images[task.id]
        if isinstance(got, TumblerError):
            raise got
        return got

    def _score_all(self, episodes, playing, turn_bonus: float, max_turns: int) -> None:
        with ThreadPoolExecutor(max_workers=max(1, min(len(episodes), WORKERS))) as pool:
            list(pool.map(lambda ep, p: self._score(ep, p, turn_bonus, max_turns), episodes, playing))
        self.results = [{"seed": ep.seed, "task": p.task.id, "reward": ep.reward,
                         "success": ep.success, "turns": ep.turns, "error": ep.error}
                        for ep, p in zip(episodes, playing)]
        for r in self.results:
            log.info("task %s (seed %d): reward %s%s", r["task"], r["seed"], r["reward"],
                     f", failed: {r['error']}" if r["error"] else "")

    def _reward(self, ep, p: _Playing) -> tuple[float, bool]:
        """The task's verifier on a pruned copy of the episode's sandbox (tumbler.tasks.verify)."""
        from tumbler.tasks.verify import verify
        config = p.image_config
        try:
            verdict = verify(p.sandbox, p.task, env=config.env, workdir=config.workdir,
                             runtime=self.runtime)
        except TumblerError as exc:
            raise EpisodeFailed(f"verifier_error: task {p.task.id}: {exc}") from None
        if verdict.error:
            raise EpisodeFailed(f"verifier_error: task {p.task.id}: {verdict.error}")
        return verdict.reward, verdict.passed

    def _release(self) -> None:
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            try:
                bridge.close()
            except Exception as exc:
                log.info("closing the model bridge: %s", exc)
        with self._lock:
            sandboxes, self.sandboxes = self.sandboxes, []
        remove_all(sandboxes)

    def close(self) -> None:
        self._release()
