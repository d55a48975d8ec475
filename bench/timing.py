"""What every benchmark here needs: time a call n times, and read percentiles off the samples."""
from __future__ import annotations

import time


def pct(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) of `samples`, nearest rank."""
    xs = sorted(samples)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def timed(fn, n: int) -> list[float]:
    """`n` timings of `fn()`, in seconds."""
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out
