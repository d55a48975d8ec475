"""Countdown: combine the given numbers with + - * / and parentheses to reach a target."""
from __future__ import annotations

import ast
from fractions import Fraction
from itertools import combinations

from .base import GameEnv

OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
       ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
MAX_EXPRESSION = 200  # characters; longer answers are refused before parsing


class Countdown(GameEnv):
    """Args: numbers (how many are given, 3..6), max_number (each is drawn from 1..max_number),
    max_turns (attempts). Each number may be used at most once. The target is built from a random
    expression over all the numbers, and the solver below reaches it by search."""

    name = "Countdown"

    def __init__(self, numbers: int = 4, max_number: int = 20, max_turns: int = 1,
                 seed: int | None = None):
        if not isinstance(numbers, int) or not 3 <= numbers <= 6:
            raise ValueError(f"numbers must be an integer from 3 to 6, got {numbers!r}")
        if not isinstance(max_number, int) or not 2 <= max_number <= 100:
            raise ValueError(f"max_number must be an integer from 2 to 100, got {max_number!r}")
        super().__init__(max_turns, seed)
        self.count, self.max_number = numbers, max_number
        self.numbers: list[int] = []
        self.target = 0
        self.solution = ""

    def config(self) -> dict:
        return {**super().config(), "numbers": self.count, "max_number": self.max_number}

    def _new_episode(self) -> str:
        while True:
            self.numbers = [self.rng.randint(1, self.max_number) for _ in range(self.count)]
            value, _ = self._random_expression(self.numbers)
            if value.denominator == 1 and 10 <= value <= 1000:
                self.target = int(value)
                self.solution = solve(self.numbers, self.target) or ""
                if self.solution:
                    break
        return (f"Using the numbers {self.numbers} (each at most once) and + - * / with "
                f"parentheses, make {self.target}. Answer with the expression in \\boxed{{}}, "
                "e.g. \\boxed{(3 + 4) * 5}.")

    def _random_expression(self, numbers: list[int]) -> tuple[Fraction, str]:
        """Combine all `numbers` in a random order with random operators (no division by 0)."""
        items = [(Fraction(n), str(n)) for n in numbers]
        self.rng.shuffle(items)
        while len(items) > 1:
            (a, ea), (b, eb) = items.pop(), items.pop()
            op = self.rng.choice("+-*/" if b != 0 else "+-*")
            items.append((_apply(op, a, b), f"({ea} {op} {eb})"))
        return items[0]

    def _move(self, move: str):
        try:
            value, used = evaluate(move)
        except ValueError as exc:
            return f"Invalid expression: {exc}", 0.0, False, {"invalid_action": True}
        if not _uses_only(used, self.numbers):
            return (f"{move} uses numbers that are not available (you have {self.numbers}, each "
                    "at most once).", 0.0, False, {"invalid_action": True})
        if value == self.target:
            return f"{move} = {self.target}. Correct!", 1.0, True, {"success": True}
        return f"{move} = {_show(value)}, not {self.target}.", 0.0, False, {}

    def _random_move(self) -> str:
        k = self.rng.randint(2, self.count)
        return self._random_expression(self.rng.sample(self.numbers, k))[1]

    def _solver_move(self) -> str:
        return self.solution


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    return {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a / b


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.4g}"


def evaluate(text: str) -> tuple[Fraction, list[int]]:
    """The exact value of an arithmetic expression and the integers it uses.
    Only integers, + - * / and parentheses are accepted (no names, calls or powers)."""
    if len(text) > MAX_EXPRESSION:
        raise ValueError(f"longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        raise ValueError(f"cannot parse {text!r}") from None
    used: list[int] = []
    return _eval(tree.body, used), used


def _eval(node, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in OPS:
        left, right = _eval(node.left, used), _eval(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        return OPS[type(node.op)](left, right)
    raise ValueError("only integers, + - * / and parentheses are allowed")


def _uses_only(used: list[int], numbers: list[int]) -> bool:
    pool = list(numbers)
    for n in used:
        if n not in pool:
            return False
        pool.remove(n)
    return True


def solve(numbers: list[int], target: int) -> str | None:
    """An expression over some of `numbers` that equals `target`, found by exhaustive search."""
    start = tuple((Fraction(n), str(n)) for n in numbers)
    seen: set = set()
    stack = [start]
    while stack:
        items = stack.pop()
        for value, expr in items:
            if value == target:
                return expr
        key = tuple(sorted(v for v, _ in items))
        if key in seen or len(items) < 2:
            continue
        seen.add(key)
        for i, j in combinations(range(len(items)), 2):
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for value, expr in _combine(items[i], items[j]):
                stack.append(tuple(rest + [(value, expr)]))
    return None


def _combine(x, y):
    (a, ea), (b, eb) = x, y
    yield a + b, f"({ea} + {eb})"
    yield a * b, f"({ea} * {eb})"
    yield a - b, f"({ea} - {eb})"
    yield b - a, f"({eb} - {ea})"
    if b != 0:
        yield a / b, f"({ea} / {eb})"
    if a != 0:
        yield b / a, f"({eb} / {ea})"
