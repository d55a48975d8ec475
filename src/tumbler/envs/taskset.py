"""Task sets as envs for the trainer: a bash tool in the task's sandbox, the task's verifier at the end.

    env = envs.make("Tasks-v0", tasks="devops")          # or a folder of Harbor/TB1 tasks
    obs, info = env.reset(seed=0)                        # the instruction of a task the seed picks
    obs, reward, terminated, truncated, info = env.step("```bash\\nls /opt\\n```")
    env.step("\\boxed{submit}")                           # the verifier runs; reward 0.0 .. 1.0

Each step's action is one bash command (the last ```bash block of the reply, or the whole
reply), run in one persistent session in a sandbox of the task's image; `\\boxed{submit}` ends
the episode, and so does the step limit (truncated). Then the task's own verifier runs as in
`tumbler tasks run` (`tumbler.tasks.verify`: a pruned copy of the sandbox, fresh tests, the
reward read by our code), and its reward is the step's. Images are built on first use (cached).
"""
from __future__ import annotations

import random
from pathlib import Path

from tumbler.envs.core import Env, Step
from tumbler.envs.terminal import FENCE, MAX_OBS, SUBMIT
from tumbler.errors import NotFound
from tumbler.tasks.loader import load_tasks
from tumbler.tasks.model import Task

SESSION = "agent"


class TaskSetEnv(Env):
    """Tasks of a set, one sandbox per episode (the previous one is removed at reset).

    Args:
        tasks: a shipped set's name, a folder of task folders, one task folder, or Tasks.
        task_id: always pose this task; otherwise reset(seed) picks one.
        max_steps: commands per episode.
        command_timeout_s: seconds one command may run before it is interrupted.
    """

    def __init__(self, tasks: str | Path | list[Task] = "devops", task_id: str | None = None,
                 runtime=None, seed: int | None = None, max_steps: int = 30,
                 command_timeout_s: float = 60.0):
        self.tasks = tasks if isinstance(tasks, list) else load_tasks(tasks)
        self._by_id = {t.id: t for t in self.tasks}
        if task_id is not None and task_id not in self._by_id:
            raise NotFound(f"no task {task_id!r}; known: {', '.join(self._by_id)}")
        self.task_id, self.runtime = task_id, runtime
        self.max_steps, self.command_timeout_s = max_steps, command_timeout_s
        self.rng = random.Random(seed)
        self._images: dict[str, tuple] = {}
        self.task: Task | None = None
        self.sandbox = None
        self.config = None
        self.steps = 0

    def reset(self, seed: int | None = None):
        from tumbler.local import LocalSandbox, default_runtime
        from tumbler.tasks.trial import task_image
        if seed is not None:
            self.rng = random.Random(seed)
        self.runtime = self.runtime or default_runtime()
        self.task = self._by_id[self.task_id] if self.task_id else self.rng.choice(self.tasks)
        if self.task.id not in self._images:
            self._images[self.task.id] = task_image(self.task, self.runtime)
        image, self.config = self._images[self.task.id]
        if self.task.workdir:
            self.config = self.config.model_copy(update={"workdir": self.task.workdir})
        self._drop_sandbox()
        self.sandbox = LocalSandbox(image, env=self.config.env, cwd=self.config.workdir,
                                    runtime=self.runtime, memory=self.task.memory,
                                    cpus=self.task.cpus, disk=self.task.disk)
        self.sandbox.mkdir(self.config.workdir)
        self.sandbox.session(SESSION, cwd=self.config.workdir)
        self.steps = 0
        obs = (f"{self.task.instruction}\n\nYou are in a bash shell in {self.config.workdir}. "
               "Reply with one command per turn (in a ```bash block, or as plain text). When "
               "you are done, reply \\boxed{submit}.")
        return obs, {"task_id": self.task.id, "max_steps": self.max_steps}

    def step(self, action) -> Step:
        text = str(action)
        if SUBMIT.match(text):
            return self._finish("Submitted.", truncated=False)
        fenced = FENCE.findall(text)
        self.steps += 1
        obs = self._run(fenced[-1] if fenced else text)
        if self.steps >= self.max_steps:
            return self._finish(obs + f"\n[no commands left: {self.max_steps} used]", truncated=True)
        return obs, 0.0, False, False, {"task_id": self.task.id}

    def sample_random_action(self) -> str:
        return self.rng.choice(["ls -la", "pwd", "cat /etc/os-release", "\\boxed{submit}"])

    def spawn(self, same_state: bool = False, **kwargs) -> "TaskSetEnv":
        if same_state:
            raise NotImplementedError("a task env cannot spawn with the same state")
        return TaskSetEnv(**{"tasks": self.tasks, "task_id": self.task_id, "runtime": self.runtime,
                             "max_steps": self.max_steps,
                             "command_timeout_s": self.command_timeout_s, **kwargs})

    def close(self) -> None:
        self._drop_sandbox()

    def _drop_sandbox(self) -> None:
        if self.sandbox is not None:
            self.sandbox.remove()
            self.sandbox = None

    def _run(self, command: str) -> str:
        result = self.sandbox.session(SESSION, create=False).run(
            command, timeout=self.command_timeout_s, max_output=MAX_OBS)
        out = result.output
        if result.truncated:
            out += f"\n[output cut at {MAX_OBS} bytes of {result.output_size}]"
        if result.timed_out:
            return out + f"\n[interrupted after {self.command_timeout_s} s]"
        return out + f"\n[exit code {result.exit_code}]"

    def _finish(self, obs: str, truncated: bool) -> Step:
        from tumbler.tasks.verify import verify
        verdict = verify(self.sandbox, self.task, env=self.config.env,
                         workdir=self.config.workdir, runtime=self.runtime)
        info = {"task_id": self.task.id, "verified": verdict.passed, "reward": verdict.reward,
                "verifier_error": verdict.error, "verifier_output": verdict.output[-4000:]}
        note = "solved" if verdict.passed else ("verifier error: " + verdict.error
                                                if verdict.error else "not solved")
        return obs + f"\nVerified: {note}.", verdict.reward, not truncated, truncated, info
