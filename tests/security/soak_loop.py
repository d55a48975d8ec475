"""The soak loop shared by tests/security/test_soak.py and bench/soak.py: create, use, reset and
remove sandboxes in batches for a while, sampling the owning process's memory and open fds."""
from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tumbler import memstats

SAMPLE_EVERY_S = 1.0
# Flat means: the last quarter's median within this much of the first quarter's.
RSS_MARGIN = 0.10
RSS_SLACK_KB = 8 << 10
FD_SLACK = 4


@dataclass
class Sample:
    t: float
    rss_kb: int
    fds: int
    sandboxes: int
    heap_in_use_kb: int = -1   # tumbler.memstats: what the RSS is made of
    heap_free_kb: int = -1
    py_blocks: int = 0


@dataclass
class SoakResult:
    seconds: float
    batch: int
    sandboxes: int = 0
    errors: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    # The ids go to a file, not a list: 40,000 id strings kept here would be the loop's own
    # growth (~3 MiB, interned ones growing CPython's interned-string table in doubling steps).
    ids_file: object = field(default_factory=lambda: tempfile.TemporaryFile("w+"))

    def ids(self) -> list[str]:
        self.ids_file.seek(0)
        return self.ids_file.read().split()

    def quarters(self, attr: str) -> tuple[float, float]:
        """Median of `attr` over the first and over the last quarter of the samples."""
        values = [getattr(s, attr) for s in self.samples]
        q = max(1, len(values) // 4)
        return statistics.median(values[:q]), statistics.median(values[-q:])

    def flat(self) -> list[str]:
        """What is not flat (empty when memory and fds are)."""
        problems = []
        rss0, rss1 = self.quarters("rss_kb")
        if rss1 > rss0 * (1 + RSS_MARGIN) + RSS_SLACK_KB:
            problems.append(f"RSS grew from {rss0:.0f} KiB to {rss1:.0f} KiB")
        fd0, fd1 = self.quarters("fds")
        if fd1 > fd0 + FD_SLACK:
            problems.append(f"open fds grew from {fd0:.0f} to {fd1:.0f}")
        return problems


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _one(runtime, image: str, n: int) -> str:
    """One sandbox's life: a command, a file round trip, a reset, another command, removal."""
    from tumbler.local import LocalSandbox
    sb = LocalSandbox(image=image, runtime=runtime)
    try:
        assert sb.run(f"echo {n}").output == f"{n}\n"
        sb.write_file("/root/data", os.urandom(4096))
        assert len(sb.read_bytes("/root/data")) == 4096
        if n % 4 == 0:
            sb.reset()
            assert sb.exec("test -e /root/data || echo gone").stdout == "gone\n"
    finally:
        sb.remove()
    return sb.id


def run(runtime, image: str, seconds: float, batch: int = 8,
        on_sample=None) -> SoakResult:
    memstats.tune()   # as the runtime's long-lived owners (server, node host) do
    result = SoakResult(seconds=seconds, batch=batch)
    start = time.monotonic()
    next_sample = start
    n = 0
    with ThreadPoolExecutor(batch) as pool:
        while time.monotonic() - start < seconds:
            futures = [pool.submit(_one, runtime, image, n + i) for i in range(batch)]
            n += batch
            for fut in futures:
                try:
                    result.ids_file.write(fut.result(timeout=120) + "\n")
                    result.sandboxes += 1
                except Exception as exc:  # recorded: the test asserts there are none
                    result.errors.append(f"{type(exc).__name__}: {exc}")
            now = time.monotonic()
            if now >= next_sample:
                mem = memstats.read()
                sample = Sample(now - start, mem.rss_kb, open_fds(), result.sandboxes,
                                mem.heap_in_use_kb, mem.heap_free_kb, mem.py_blocks)
                result.samples.append(sample)
                if on_sample:
                    on_sample(sample)
                next_sample = now + SAMPLE_EVERY_S
    return result


def leftovers_of(runtime, ids: list[str]) -> list[str]:
    """What any of the sandboxes `ids` left behind, checked in one pass (ids are many)."""
    from tumbler.runtime import cgroups, disks
    wanted = set(ids)
    found = [f"directory {i}" for i in wanted if (runtime.paths.sandboxes / i).exists()]
    found += [f"runc state {i}" for i in wanted if (runtime.paths.runc_root / f"tmb-{i}").exists()]
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh
                  if any(f"/{i}/" in line for i in _ids_in(line, wanted))]
    found += [f"loop device {d}" for d in disks.loop_devices_of("/sandboxes/")
              if any(i in _backing(d) for i in wanted)]
    found += [f"cgroup {p}" for i in wanted for p in cgroups.leftover_dirs(f"tumbler/{i}")]
    ps = subprocess.run(["ps", "-eo", "pid,cgroup:512"], capture_output=True, text=True,
                        timeout=30).stdout
    found += [f"process {line}" for line in ps.splitlines()
              if "tumbler/" in line and line.split("tumbler/")[-1].split()[0].split(",")[0] in wanted]
    return found


def _ids_in(line: str, wanted: set[str]) -> list[str]:
    return [part for part in line.replace("/", " ").split() if part in wanted]


def _backing(device: str) -> str:
    try:
        with open(f"/sys/block/{device}/loop/backing_file") as fh:
            return fh.read()
    except OSError:
        return ""
