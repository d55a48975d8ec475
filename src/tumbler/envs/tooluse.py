"""Tool use: questions answered with the help of python or bash run inside a sandbox.

Each step's action is either a tool call, run in the sandbox and answered with its output,

    <python>print(sum(range(10)))</python>      or      <bash>ls /etc | wc -l</bash>

or a final answer in `\\boxed{...}`, which ends the episode with reward 1.0 when it matches the
expected answer (compared as text, trimmed). A reply with neither is a format error (reward
`format_penalty`, the episode goes on). Questions are generated from a seed; their answers are
computed on the host, so nothing in the sandbox can change what counts as correct.
"""
from __future__ import annotations

import hashlib
import random
import re

from tumbler.envs.core import Env, Step
from tumbler.envs.games import extract_move

TOOL_CALL = re.compile(r"<(python|bash)>(.*?)</\1>", re.DOTALL)
MAX_OBS = 8 * 1024       # bytes of tool output shown back
WORDS = ["sandbox", "tumbler", "gradient", "policy", "reward", "episode", "kernel", "socket"]


def _question(rng: random.Random) -> tuple[str, str, str]:
    """(question, answer, python that computes it): tedious by hand, easy with a tool."""
    kind = rng.randrange(4)
    if kind == 0:
        n = rng.randint(2_000, 20_000)
        count = sum(1 for p in range(2, n) if all(p % d for d in range(2, int(p ** 0.5) + 1)))
        return (f"How many prime numbers are smaller than {n}?", str(count),
                f"print(sum(all(p % d for d in range(2, int(p**0.5) + 1)) for p in range(2, {n})))")
    if kind == 1:
        word = rng.choice(WORDS) + str(rng.randint(0, 999))
        digest = hashlib.sha256(word.encode()).hexdigest()[:12]
        return (f"What are the first 12 hex digits of the SHA-256 of the text '{word}' (no newline)?",
                digest, f"import hashlib; print(hashlib.sha256(b'{word}').hexdigest()[:12])")
    if kind == 2:
        k = rng.randint(100, 400)
        return (f"What is the sum of the decimal digits of 2**{k}?", str(sum(map(int, str(2 ** k)))),
                f"print(sum(map(int, str(2**{k}))))")
    n = rng.randint(20, 60)
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return (f"What is the {n}th Fibonacci number (F(0)=0, F(1)=1)?", str(a),
            f"a, b = 0, 1\nfor _ in range({n}): a, b = b, a + b\nprint(a)")


class ToolUseEnv(Env):
    """Args: max_turns (tool calls and answers per episode), tool_timeout (seconds per call),
    format_penalty, image and runtime (of the env's own LocalSandbox, made on the first reset
    and reused), or `sandbox`: one to use instead (a `LocalSandbox` or a server's
    `tumbler.Sandbox`), reset for each episode and never removed by the env."""

    def __init__(self, max_turns: int = 6, tool_timeout: float = 10.0, format_penalty: float = -0.1,
                 image: str = "debian", runtime=None, seed: int | None = None, sandbox=None):
        if not isinstance(max_turns, int) or max_turns < 1:
            raise ValueError(f"max_turns must be a positive integer, got {max_turns!r}")
        self.max_turns, self.tool_timeout, self.format_penalty = max_turns, tool_timeout, format_penalty
        self.image, self.runtime = image, runtime
        self.rng = random.Random(seed)
        self.sandbox, self._owns_sandbox = sandbox, sandbox is None
        self.question = self.answer = self.solver_code = ""
        self.turn = 0

    def reset(self, seed: int | None = None):
        if seed is not None:
            self.rng = random.Random(seed)
        self.question, self.answer, self.solver_code = _question(self.rng)
        self.turn = 0
        self._fresh_sandbox()
        obs = (f"{self.question}\nYou may run code: reply <python>...</python> or <bash>...</bash> "
               "and you will see its output. Give your final answer as \\boxed{answer}.")
        return obs, {"max_turns": self.max_turns}

    def step(self, action) -> Step:
        self.turn += 1
        text = str(action)
        call = TOOL_CALL.search(text)
        if call:
            obs, reward, terminated, info = self._tool(call.group(1), call.group(2)), 0.0, False, {"use_tool": True}
        elif "\\boxed{" in text:
            correct = extract_move(text) == self.answer
            obs = "Correct." if correct else "Wrong answer."
            reward, terminated, info = float(correct), True, {"success": correct}
        else:
            obs = "No tool call and no \\boxed{} answer in your reply."
            reward, terminated, info = self.format_penalty, False, {"format_error": True}
        truncated = not terminated and self.turn >= self.max_turns
        return obs, reward, terminated, truncated, info

    def sample_random_action(self) -> str:
        return self.rng.choice(["<bash>ls</bash>", "<python>print(42)</python>",
                                f"\\boxed{{{self.rng.randint(0, 10_000)}}}", "I am not sure."])

    def reference_action(self, last_obs: str = "") -> str:
        """The reference solver: first a python call that computes the answer, then the boxed
        first line of what that call printed (`last_obs`)."""
        if self.turn == 0:
            return f"<python>{self.solver_code}</python>"
        return f"\\boxed{{{last_obs.strip().splitlines()[0] if last_obs.strip() else ''}}}"

    def spawn(self, same_state: bool = False, **kwargs) -> "ToolUseEnv":
        if same_state:
            raise NotImplementedError("a tool-use env cannot spawn with the same state")
        return ToolUseEnv(**{"max_turns": self.max_turns, "tool_timeout": self.tool_timeout,
                             "format_penalty": self.format_penalty, "image": self.image,
                             "runtime": self.runtime, **kwargs})

    def close(self) -> None:
        if self.sandbox is not None and self._owns_sandbox:
            self.sandbox.remove()
        self.sandbox = None

    def _fresh_sandbox(self) -> None:
        from tumbler.local import LocalSandbox
        if self.sandbox is None:
            self.sandbox = LocalSandbox(image=self.image, runtime=self.runtime)
        else:
            self.sandbox.reset()

    def _tool(self, tool: str, code: str) -> str:
        argv = ["/usr/bin/python3", "-c", code] if tool == "python" else ["/bin/bash", "-c", code]
        result = self.sandbox.exec(argv, timeout=self.tool_timeout, max_output=MAX_OBS)
        out = (result.stdout_bytes + result.stderr_bytes).decode(errors="replace")
        if result.timed_out:
            return out + f"\n[{tool} timed out after {self.tool_timeout} s]"
        return out + ("" if result.exit_code == 0 else f"\n[exit code {result.exit_code}]")
