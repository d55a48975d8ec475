"""Terminal tasks: the agent works through a bash session in a sandbox; a verifier decides.

Each step's action is one bash command (a ```bash fenced block in the reply, or the whole reply);
`\\boxed{submit}` (or the bare word `submit`) ends the episode. The episode also ends after the
task's `max_steps` commands (truncated). Either way the verifier then runs and gives the reward:
1.0 when it exits 0, else 0.0.

Where the verifier runs, and why: nothing the agent could have written is trusted. After the
episode the agent's `workdir` is read out as a tar by the agent process (started before the
episode, from the read-only mount), and unpacked into a *second, pristine* sandbox of the same
image, after the host has unpacked it with its strict routine (`tumbler.archives`: members that
would leave workdir, devices and compressed bodies are refused) and packed it again.
Only then is the verifier script written there, outside workdir, and run with `/bin/bash` by
absolute path. So a replaced `python3`, a doctored `/etc`, a planted `.bashrc` or a background
process in the agent's sandbox cannot reach the verifier; only workdir's files do, and verifiers
treat those as data (Python verifiers run `python3 -I` and load the agent's modules by path).
The verifier's sandbox is reset to its image before every check.

The two sandboxes are the env's own `LocalSandbox`es by default; pass `sandbox=` and `verifier=`
to play through any sandbox with the common sandbox API (`LocalSandbox`, a server's
`tumbler.Sandbox`): the env then resets them for each episode and leaves them to their owner.
"""
from __future__ import annotations

import logging
import random
import re
import tempfile
from pathlib import Path

from tumbler.envs.core import Env, Step
from tumbler.envs.taskfile import BUILTIN_TASKS, TerminalTask, load_tasks
from tumbler.errors import NotFound, RuntimeFailure

log = logging.getLogger("tumbler.envs.terminal")

FENCE = re.compile(r"```(?:bash|sh|shell)?\s*\n(.*?)```", re.DOTALL)
SUBMIT = re.compile(r"^\s*(?:\\boxed\{\s*(?:submit|done)\s*\}|submit|done)\s*$", re.IGNORECASE)
MAX_OBS = 16 * 1024           # bytes of a command's output shown to the agent
VERIFY_SCRIPT = "/tmp/.tumbler-verify.sh"
SESSION = "agent"


class TerminalEnv(Env):
    """Terminal tasks from a task file, one sandbox for the agent and one for the verifier.

    Args:
        tasks: a task file (.jsonl/.json), a list of TerminalTask, or None for the built-in set.
        task_id: always pose this task; otherwise reset(seed) picks one with the env's generator.
        runtime: the runtime of the sandboxes the env makes (default: this host's process runtime).
        sandbox, verifier: sandboxes to use instead of making them (a `LocalSandbox` or a
            server's `tumbler.Sandbox`, of the tasks' image): reset for each episode, never
            removed by the env. Each None: a `LocalSandbox` of the task's image, the env's own.
    """

    def __init__(self, tasks: str | Path | list[TerminalTask] | None = None,
                 task_id: str | None = None, runtime=None, seed: int | None = None,
                 sandbox=None, verifier=None):
        self.tasks = tasks if isinstance(tasks, list) else load_tasks(tasks or BUILTIN_TASKS)
        self._by_id = {t.id: t for t in self.tasks}
        if task_id is not None and task_id not in self._by_id:
            raise NotFound(f"no task {task_id!r}; known: {', '.join(self._by_id)}")
        self.task_id, self.runtime = task_id, runtime
        self.rng = random.Random(seed)
        self.task: TerminalTask | None = None
        self.sandbox, self.verifier = sandbox, verifier
        self._given = {id(sb) for sb in (sandbox, verifier) if sb is not None}
        self.steps = 0

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.rng = random.Random(seed)
        self.task = self._by_id[self.task_id] if self.task_id else self.rng.choice(self.tasks)
        self.steps = 0
        self._fresh_sandbox()
        self._setup()
        obs = (f"{self.task.instruction}\n\nYou are in a bash shell in {self.task.workdir}. Reply with "
               "one command per turn (in a ```bash block, or as plain text). When you are done, "
               "reply \\boxed{submit}.")
        return obs, {"task_id": self.task.id, "max_steps": self.task.max_steps}

    def step(self, action) -> Step:
        text = str(action)
        if SUBMIT.match(text):
            return self._finish("Submitted.", truncated=False)
        fenced = FENCE.findall(text)
        command = fenced[-1] if fenced else text
        self.steps += 1
        obs = self._run(command)
        if self.steps >= self.task.max_steps:
            return self._finish(obs + f"\n[no commands left: {self.task.max_steps} used]", truncated=True)
        return obs, 0.0, False, False, {"task_id": self.task.id}

    def sample_random_action(self) -> str:
        return self.rng.choice(["ls -la", "pwd", "cat *", "echo hello > out.txt", "\\boxed{submit}"])

    def reference_action(self) -> str:
        """The task's reference solution as one command."""
        return f"```bash\n{self.task.solution}\n```"

    def spawn(self, same_state: bool = False, **kwargs) -> "TerminalEnv":
        if same_state:
            raise NotImplementedError("a terminal env cannot spawn with the same state")
        return TerminalEnv(**{"tasks": self.tasks, "task_id": self.task_id,
                              "runtime": self.runtime, **kwargs})

    def close(self) -> None:
        for sb in (self.sandbox, self.verifier):
            if sb is not None and id(sb) not in self._given:
                sb.remove()
        self.sandbox = self.verifier = None

    # -- the agent's sandbox ---------------------------------------------------------------

    def _fresh_sandbox(self) -> None:
        """A pristine sandbox of the task's image (reset when the image is the same, ~50 ms)."""
        self.sandbox = self._pristine(self.sandbox)

    def _pristine(self, sb):
        from tumbler.local import LocalSandbox
        if sb is not None and (id(sb) in self._given or sb.info.spec.image == self.task.image):
            sb.reset()
            return sb
        if sb is not None:
            sb.remove()
        return LocalSandbox(image=self.task.image, runtime=self.runtime)

    def _setup(self) -> None:
        task, sb = self.task, self.sandbox
        sb.mkdir(task.workdir)
        if task.setup:
            result = sb.exec(["/bin/bash", "-c", task.setup], cwd=task.workdir,
                             timeout=task.command_timeout_s)
            if result.exit_code != 0:
                raise RuntimeFailure(f"setup of task {task.id!r} failed ({result.exit_code}): "
                                     f"{result.stderr_bytes.decode(errors='replace')[-2000:]}")
        sb.session(SESSION, cwd=task.workdir)

    def _run(self, command: str) -> str:
        result = self.sandbox.session(SESSION, create=False).run(
            command, timeout=self.task.command_timeout_s, max_output=MAX_OBS)
        out = result.output
        if result.truncated:
            out += f"\n[output cut at {MAX_OBS} bytes of {result.output_size}]"
        if result.timed_out:
            return out + f"\n[interrupted after {self.task.command_timeout_s} s]"
        return out + f"\n[exit code {result.exit_code}]"

    # -- the verifier ----------------------------------------------------------------------

    def _finish(self, obs: str, truncated: bool) -> Step:
        passed, report = self.verify()
        info = {"task_id": self.task.id, "verified": passed, "verifier_output": report}
        return obs + ("\nVerified: solved." if passed else "\nVerified: not solved."), \
            float(passed), not truncated, truncated, info

    def verify(self) -> tuple[bool, str]:
        """Run the task's verifier on a copy of workdir in a pristine sandbox: (passed, output)."""
        task = self.task
        self.verifier = self._pristine(self.verifier)
        with tempfile.TemporaryDirectory(prefix="tumbler-verify-") as tmp:
            # The agent's sandbox made the tar of workdir (root there can forge it): unpacked
            # on the host by the strict routine (`download`: only files, directories and links
            # kept inside workdir), and packed again by us for the verifier's sandbox, whose
            # own tar code never sees what the agent made.
            copy = Path(tmp) / "workdir"
            self.sandbox.download(task.workdir, copy, links=True)
            self.verifier.upload(copy, task.workdir)
        self.verifier.write_file(VERIFY_SCRIPT, task.verify, mode=0o500)
        result = self.verifier.exec(["/bin/bash", VERIFY_SCRIPT], cwd=task.workdir,
                                    timeout=task.verify_timeout_s)
        output = (result.stdout_bytes + result.stderr_bytes).decode(errors="replace")[-4000:]
        log.debug("task %s verifier exit %s", task.id, result.exit_code)
        return result.exit_code == 0, output


def task_ids(path: str | Path | None = None) -> list[str]:
    """Ids in a task file (the built-in set by default)."""
    return [t.id for t in load_tasks(path or BUILTIN_TASKS)]


__all__ = ["TerminalEnv", "TerminalTask", "load_tasks", "task_ids"]
