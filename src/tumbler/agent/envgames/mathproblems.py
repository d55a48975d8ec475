"""Math: generated problems with exact answers (single-turn RLVR), checked by value.

Kinds: arithmetic expressions, linear equations, word problems, remainders of powers, gcd/lcm,
and fraction sums. Every problem is generated from the seed with its answer computed exactly
(integers or fractions), so the verifier is exact: the last \\boxed{} of the reply is read as an
integer, a fraction p/q or a finite decimal and compared by value.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

from .base import GameEnv

KINDS = ("arithmetic", "linear", "word", "power_mod", "gcd_lcm", "fractions")
MAX_ANSWER = 64          # characters of an answer read at most
NUMBER = re.compile(r"^[-+]?(\d+(\.\d+)?|\d+\s*/\s*\d+)$")

WORDS = [
    ("{name} has {a} marbles, buys {b} bags of {c} marbles each, then gives away {d}. "
     "How many marbles does {name} have now?", lambda a, b, c, d: a + b * c - d),
    ("A train travels {a} km every hour for {b} hours, then {c} km more. How many km is that "
     "in all?", lambda a, b, c, d: a * b + c),
    ("{name} shares {a} sweets among {b} friends, giving each the same number and as many as "
     "possible, and keeps what is left. How many sweets does {name} keep?",
     lambda a, b, c, d: a % b),
    ("A box holds {c} pens. How many full boxes can be filled from {a} pens, plus {b} boxes "
     "already full?", lambda a, b, c, d: a // c + b),
]
NAMES = ["Ada", "Bo", "Chen", "Dana", "Eli", "Fay"]


class Math(GameEnv):
    """Args: level (1-3: the size of the numbers), kinds (a subset of KINDS), max_turns (1:
    single-turn RLVR). Reward 1 for the exact answer, else 0."""

    name = "Math"

    def __init__(self, level: int = 1, kinds: list[str] | tuple[str, ...] = KINDS,
                 max_turns: int = 1, seed: int | None = None):
        if level not in (1, 2, 3):
            raise ValueError(f"level must be 1, 2 or 3, got {level!r}")
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of {list(KINDS)}, got {list(kinds)!r}")
        super().__init__(max_turns, seed)
        self.level, self.kinds = level, list(kinds)
        self.answer: Fraction = Fraction(0)
        self.kind = ""

    def config(self) -> dict:
        return {**super().config(), "level": self.level, "kinds": list(self.kinds)}

    def _new_episode(self) -> str:
        self.kind = self.rng.choice(self.kinds)
        question, self.answer = getattr(self, f"_{self.kind}")()
        return f"{question}\nGive the exact answer in \\boxed{{}}."

    def _n(self, low: int = 1) -> int:
        return self.rng.randint(low, (12, 60, 400)[self.level - 1])

    def _arithmetic(self):
        terms = [self._n() for _ in range(self.level + 2)]
        expr = str(terms[0])
        for t in terms[1:]:
            op = self.rng.choice("+-*")
            expr = f"({expr} {op} {t})" if op == "*" and self.rng.random() < 0.5 else f"{expr} {op} {t}"
        return f"Compute {expr}.", Fraction(_evaluate(expr))

    def _linear(self):
        a, x, b = self._n(2), self.rng.randint(-20, 20), self._n()
        return f"Solve for x: {a}x + {b} = {a * x + b}.", Fraction(x)

    def _word(self):
        text, fn = self.rng.choice(WORDS)
        a, b, c, d = self._n(10), self._n(2), self._n(2), self._n()
        d = min(d, a)
        return text.format(name=self.rng.choice(NAMES), a=a, b=b, c=c, d=d), Fraction(fn(a, b, c, d))

    def _power_mod(self):
        a, b, m = self._n(2), self.rng.randint(2, 3 + 2 * self.level), self.rng.randint(3, 30)
        return f"What is the remainder when {a}^{b} is divided by {m}?", Fraction(pow(a, b, m))

    def _gcd_lcm(self):
        k = self._n(2)
        a, b = k * self._n(), k * self._n()
        if self.rng.random() < 0.5:
            return f"What is the greatest common divisor of {a} and {b}?", Fraction(math.gcd(a, b))
        return f"What is the least common multiple of {a} and {b}?", Fraction(math.lcm(a, b))

    def _fractions(self):
        p, q, r, s = self._n(), self._n(2), self._n(), self._n(2)
        return (f"Compute {p}/{q} + {r}/{s} as a fraction in lowest terms (or an integer).",
                Fraction(p, q) + Fraction(r, s))

    def _move(self, move: str):
        value = parse_number(move)
        if value is None:
            return (f"{move[:MAX_ANSWER]!r} is not a number: answer with an integer, a fraction "
                    "p/q or a decimal."), 0.0, False, {"success": False}
        if value == self.answer:
            return "Correct.", 1.0, True, {"success": True}
        return "Incorrect.", 0.0, False, {"success": False}

    def _random_move(self) -> str:
        return str(self.rng.randint(-20, 100))

    def _solver_move(self) -> str:
        a = self.answer
        return str(a.numerator) if a.denominator == 1 else f"{a.numerator}/{a.denominator}"


def parse_number(text: str) -> Fraction | None:
    """An integer, p/q or a finite decimal (commas and a leading 'x =' allowed), else None."""
    text = text.strip().replace(",", "").replace(" ", "")
    text = re.sub(r"^[a-z]=", "", text)
    if len(text) > MAX_ANSWER or not NUMBER.match(text):
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value


def _evaluate(expr: str) -> int:
    """The value of an expression of integers, + - * and parentheses (we wrote it: no eval)."""
    import ast
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b}

    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        return ops[type(node.op)](walk(node.left), walk(node.right))
    return walk(ast.parse(expr, mode="eval").body)
