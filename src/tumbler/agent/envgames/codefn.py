"""Code: write a small Python function; hidden tests, generated from the seed, judge it.

Single-turn RLVR for code. The reply's ```python block (or the whole reply) is run in a child
process with the test inputs only: the expected outputs stay in this process, so the candidate
cannot print its way to a pass. The child runs as the unprivileged user `nobody` when this runs
as root (it cannot signal, trace or read the env's process), with limits on CPU time, memory and
output, and a wall-clock timeout.

The candidate's code is untrusted: this game runs it only inside a sandbox (the env hosted there,
where this file lives under /.tumbler), unless made with allow_host=True.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

from .base import GameEnv

CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)
TESTS = 8               # hidden cases per episode
WALL_S = 10.0           # seconds for all cases together
CPU_S = 5               # CPU seconds for the child
MEMORY = 512 << 20      # bytes of address space for the child
OUTPUT = 1 << 20        # bytes the child may write
NOBODY = 65534

RUNNER = r"""
import io, json, sys
job = json.loads(sys.stdin.read())
real, sys.stdout = sys.stdout, io.StringIO()
results = []
try:
    scope = {"__name__": "candidate"}
    exec(compile(job["code"], "<candidate>", "exec"), scope)
    if not callable(scope.get(job["fn"])):
        raise NameError(f"the code defines no function {job['fn']}")
    fn = scope[job["fn"]]
except BaseException as exc:
    results = [{"error": f"{type(exc).__name__}: {exc}"[:300]}] * len(job["cases"])
else:
    for args in job["cases"]:
        try:
            results.append({"value": fn(*args)})
        except BaseException as exc:
            results.append({"error": f"{type(exc).__name__}: {exc}"[:300]})
sys.stdout = real
try:
    out = json.dumps(results)
except (TypeError, ValueError):
    out = json.dumps([r if "error" in r else {"value": repr(r["value"])} for r in results])
print("\n@@RESULTS@@" + out)
"""


def _task(name, signature, text, reference, gen):
    return {"name": name, "signature": signature, "text": text, "ref": reference, "gen": gen}


def _ints(rng, n=(0, 10), v=(-50, 50)):
    return [rng.randint(*v) for _ in range(rng.randint(*n))]


def _word(rng, letters="abcdeio", n=(1, 7)):
    return "".join(rng.choice(letters) for _ in range(rng.randint(*n)))


def _rle(s):
    out, i = [], 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out.append(f"{j - i}{s[i]}")
        i = j
    return "".join(out)


def _balanced(s):
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def _max_subarray(xs):
    best = cur = 0
    for x in xs:
        cur = max(0, cur + x)
        best = max(best, cur)
    return best


TASKS = [
    _task("sum_even", "sum_even(xs: list[int]) -> int", "returns the sum of the even numbers in xs",
          lambda xs: sum(x for x in xs if x % 2 == 0), lambda r: (_ints(r),)),
    _task("count_vowels", "count_vowels(s: str) -> int", "returns how many of the characters of s "
          "are vowels (a, e, i, o, u; lower case only)",
          lambda s: sum(c in "aeiou" for c in s), lambda r: (_word(r, "abeiouxyz", (0, 12)),)),
    _task("is_palindrome", "is_palindrome(s: str) -> bool", "returns whether s reads the same "
          "backwards", lambda s: s == s[::-1],
          lambda r: ((lambda w: w + w[::-1][r.randint(0, 1):] if r.random() < 0.5 else w)(_word(r, "abc")),)),
    _task("second_largest", "second_largest(xs: list[int]) -> int | None", "returns the second "
          "largest distinct value in xs, or None when there is none",
          lambda xs: sorted(set(xs))[-2] if len(set(xs)) > 1 else None, lambda r: (_ints(r, (0, 8), (0, 9)),)),
    _task("run_length", "run_length(s: str) -> str", "encodes runs of equal characters as count "
          "then character, e.g. 'aaab' -> '3a1b'", _rle, lambda r: (_word(r, "ab", (0, 10)),)),
    _task("fizzbuzz", "fizzbuzz(n: int) -> list[str]", "returns the strings for 1..n: 'Fizz' for "
          "multiples of 3, 'Buzz' for multiples of 5, 'FizzBuzz' for both, else the number",
          lambda n: ["FizzBuzz" if i % 15 == 0 else "Fizz" if i % 3 == 0 else "Buzz" if i % 5 == 0
                     else str(i) for i in range(1, n + 1)], lambda r: (r.randint(0, 20),)),
    _task("rotate", "rotate(xs: list[int], k: int) -> list[int]", "returns xs rotated right by k "
          "places (k may exceed len(xs))", lambda xs, k: xs[-(k % len(xs)):] + xs[:-(k % len(xs))] if xs else [],
          lambda r: (_ints(r), r.randint(0, 12))),
    _task("unique", "unique(xs: list[int]) -> list[int]", "returns the values of xs without "
          "repeats, in the order they first appear", lambda xs: list(dict.fromkeys(xs)),
          lambda r: (_ints(r, (0, 10), (0, 5)),)),
    _task("caesar", "caesar(s: str, k: int) -> str", "shifts each lower-case letter of s by k "
          "places in the alphabet (wrapping around); other characters stay",
          lambda s, k: "".join(chr((ord(c) - 97 + k) % 26 + 97) if "a" <= c <= "z" else c for c in s),
          lambda r: (_word(r, "abcxyz -!", (0, 10)), r.randint(-30, 30))),
    _task("digit_sum", "digit_sum(n: int) -> int", "returns the sum of the decimal digits of n "
          "(n may be negative: ignore the sign)", lambda n: sum(map(int, str(abs(n)))),
          lambda r: (r.randint(-10**6, 10**6),)),
    _task("balanced", "balanced(s: str) -> bool", "returns whether the brackets ()[]{} in s are "
          "balanced and properly nested", _balanced, lambda r: (_word(r, "()[]{}", (0, 8)),)),
    _task("max_subarray", "max_subarray(xs: list[int]) -> int", "returns the largest sum of a "
          "contiguous run of xs (0 for an empty run)", _max_subarray, lambda r: (_ints(r, (0, 10), (-9, 9)),)),
    _task("merge_sorted", "merge_sorted(a: list[int], b: list[int]) -> list[int]", "merges two "
          "sorted lists into one sorted list", lambda a, b: sorted(a + b),
          lambda r: (sorted(_ints(r)), sorted(_ints(r)))),
    _task("fib", "fib(n: int) -> int", "returns the n-th Fibonacci number, fib(0) = 0, fib(1) = 1",
          lambda n: _fib(n), lambda r: (r.randint(0, 40),)),
    _task("transpose", "transpose(m: list[list[int]]) -> list[list[int]]", "returns the transpose "
          "of the rectangular matrix m", lambda m: [list(row) for row in zip(*m)],
          lambda r: ((lambda rows, cols: [[r.randint(0, 9) for _ in range(cols)] for _ in range(rows)])(
              r.randint(1, 4), r.randint(1, 4)),)),
    _task("word_count", "word_count(s: str) -> dict[str, int]", "returns how often each "
          "space-separated word occurs in s",
          lambda s: {w: s.split().count(w) for w in s.split()},
          lambda r: (" ".join(r.choice(["a", "b", "cat", "dog"]) for _ in range(r.randint(0, 8))),)),
]


def _fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Code(GameEnv):
    """Args: tasks (names from TASKS, default all), max_turns (1: single-turn; more turns show
    the first failing case as feedback), allow_host (run candidates where this process runs,
    outside a sandbox: only for code you trust). Reward: the fraction of hidden cases passed;
    success: all of them."""

    name = "Code"

    def __init__(self, tasks: list[str] | None = None, max_turns: int = 1, allow_host: bool = False,
                 seed: int | None = None):
        names = [t["name"] for t in TASKS]
        unknown = [t for t in tasks or () if t not in names]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {names}")
        if not allow_host and not _in_sandbox():
            raise RuntimeError("Code-v0 runs untrusted code: host it in a sandbox (env.hosted: true,"
                               " or HostedEnv) or pass allow_host=True for code you trust")
        super().__init__(max_turns, seed)
        self.tasks = list(tasks) if tasks else names
        self.allow_host = allow_host
        self.task: dict = {}
        self.cases: list[tuple] = []
        self.expected: list = []

    def config(self) -> dict:
        return {**super().config(), "tasks": list(self.tasks), "allow_host": self.allow_host}

    def _new_episode(self) -> str:
        by_name = {t["name"]: t for t in TASKS}
        self.task = by_name[self.rng.choice(self.tasks)]
        self.cases = [self.task["gen"](self.rng) for _ in range(TESTS)]
        self.expected = [_plain(self.task["ref"](*_copy(args))) for args in self.cases]
        return (f"Write a Python function `{self.task['signature']}` that {self.task['text']}. "
                "Reply with the whole function in a ```python code block.")

    def step(self, action):
        # the code is the move, not a \boxed{} value: parse it here, then score as the base does
        self.turn += 1
        code = extract_code(str(action))
        feedback, reward, terminated, info = self._judge(code)
        info["turn"] = self.turn
        truncated = not terminated and self.turn >= self.max_turns
        return feedback, reward, terminated, truncated, info

    def _judge(self, code: str):
        results = run_candidate(code, self.task["name"], self.cases)
        passed, first_failure = 0, None
        for args, want, got in zip(self.cases, self.expected, results):
            if "value" in got and got["value"] == want:
                passed += 1
            elif first_failure is None:
                seen = got.get("error") or f"returned {got.get('value')!r}"
                first_failure = f"{self.task['name']}{tuple(args)!r} {seen}, expected {want!r}"
        reward = passed / len(self.cases)
        if passed == len(self.cases):
            return f"All {passed} tests pass.", 1.0, True, {"success": True, "passed": passed}
        feedback = f"{passed} of {len(self.cases)} tests pass. First failure: {first_failure}"[:600]
        return feedback, reward, False, {"success": False, "passed": passed}

    def _random_move(self) -> str:
        return "def f():\n    return None"

    def _solver_move(self) -> str:
        return SOLUTIONS.get(self.task.get("name"), "")

    def reference_action(self) -> str:
        return "```python\n" + self._solver_move() + "```"

    def sample_random_action(self) -> str:
        return "```python\n" + self._random_move() + "\n```"


def extract_code(reply: str) -> str:
    blocks = CODE_BLOCK.findall(reply)
    return blocks[-1] if blocks else reply


def run_candidate(code: str, fn: str, cases: list[tuple]) -> list[dict]:
    """Each case's {"value": ...} or {"error": "..."} from a child process (see module doc)."""
    job = json.dumps({"code": code, "fn": fn, "cases": [list(c) for c in cases]})
    with tempfile.TemporaryFile() as out:
        try:
            subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER], input=job.encode(),
                           stdout=out, stderr=subprocess.DEVNULL, timeout=WALL_S,
                           preexec_fn=_limit_child, cwd="/", env={"PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            return [{"error": f"timed out after {WALL_S:.0f} s"}] * len(cases)
        out.seek(0)
        text = out.read(OUTPUT + 1).decode("utf-8", "replace")
    marker = text.rfind("\n@@RESULTS@@")
    try:
        results = json.loads(text[marker + len("\n@@RESULTS@@"):]) if marker >= 0 else None
    except ValueError:
        results = None
    if not isinstance(results, list) or len(results) != len(cases) or \
            not all(isinstance(r, dict) for r in results):
        return [{"error": "the program crashed or wrote no results"}] * len(cases)
    return results


def _limit_child() -> None:
    import resource
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT, OUTPUT))
    os.setsid()
    if os.getuid() == 0 and _in_sandbox():     # on the host (allow_host) the code is trusted
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _in_sandbox() -> bool:
    return os.path.abspath(__file__).startswith("/.tumbler/")


def _copy(args: tuple) -> tuple:
    return json.loads(json.dumps(list(args)))


def _plain(value):
    """The expected value as it comes back through JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


SOLUTIONS = {
    "sum_even": "def sum_even(xs):\n    return sum(x for x in xs if x % 2 == 0)\n",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n",
    "is_palindrome": "def is_palindrome(s):\n    return s == s[::-1]\n",
    "second_largest": "def second_largest(xs):\n    v = sorted(set(xs))\n    return v[-2] if len(v) > 1 else None\n",
    "run_length": ("def run_length(s):\n    import itertools\n"
                   "    return ''.join(f'{len(list(g))}{k}' for k, g in itertools.groupby(s))\n"),
    "fizzbuzz": ("def fizzbuzz(n):\n    return ['FizzBuzz' if i % 15 == 0 else 'Fizz' if i % 3 == 0 else"
                 " 'Buzz' if i % 5 == 0 else str(i) for i in range(1, n + 1)]\n"),
    "rotate": "def rotate(xs, k):\n    if not xs:\n        return []\n    k %= len(xs)\n    return xs[-k:] + xs[:-k] if k else list(xs)\n",
    "unique": "def unique(xs):\n    return list(dict.fromkeys(xs))\n",
    "caesar": ("def caesar(s, k):\n    return ''.join(chr((ord(c) - 97 + k) % 26 + 97) if 'a' <= c <= 'z'"
               " else c for c in s)\n"),
    "digit_sum": "def digit_sum(n):\n    return sum(map(int, str(abs(n))))\n",
    "balanced": ("def balanced(s):\n    pairs, stack = {')': '(', ']': '[', '}': '{'}, []\n    for ch in s:\n"
                 "        if ch in '([{':\n            stack.append(ch)\n"
                 "        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):\n"
                 "            return False\n    return not stack\n"),
    "max_subarray": ("def max_subarray(xs):\n    best = cur = 0\n    for x in xs:\n        cur = max(0, cur + x)\n"
                     "        best = max(best, cur)\n    return best\n"),
    "merge_sorted": "def merge_sorted(a, b):\n    return sorted(a + b)\n",
    "fib": "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "transpose": "def transpose(m):\n    return [list(r) for r in zip(*m)]\n",
    "word_count": "def word_count(s):\n    out = {}\n    for w in s.split():\n        out[w] = out.get(w, 0) + 1\n    return out\n",
}
