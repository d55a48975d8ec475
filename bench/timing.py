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


async def echo_window(sessions: list, seconds: float) -> float:
    """Commands/s of `sessions` (async sessions, each its own worker) running `echo hi` back to
    back for `seconds`."""
    import asyncio
    count, stop_at = 0, time.perf_counter() + seconds

    async def worker(s):
        nonlocal count
        while time.perf_counter() < stop_at:
            await s.run("echo hi")
            count += 1
    t = time.perf_counter()
    await asyncio.gather(*(worker(s) for s in sessions))
    return count / (time.perf_counter() - t)
