"""Per-node admission: a sandbox is admitted only while the sum of limits fits the node budget."""
from __future__ import annotations

from dataclasses import dataclass

from tumbler.errors import CapacityExceeded
from tumbler.runtime.spec import Limits


@dataclass
class Budget:
    """What the node gives to sandboxes in all: memory in bytes, pids, cpus in cores."""

    memory_bytes: int
    pids: int
    cpus: float


class Admission:
    """Tracks the limits of the sandboxes that hold a place (created or running).

    Not thread-safe: the service calls it from the event loop only, so check-and-reserve
    is atomic without a lock.
    """

    def __init__(self, budget: Budget):
        self.budget = budget
        self._held: dict[str, Limits] = {}
        # Running sums of what is held: a check costs the same with 10,000 held as with one.
        self._memory, self._pids, self._cpus = 0, 0, 0.0

    def reserve(self, sandbox_id: str, limits: Limits) -> None:
        """Hold a place for `sandbox_id`, or raise CapacityExceeded naming what is short."""
        if sandbox_id in self._held:
            return
        mem = self._memory + limits.memory
        pids = self._pids + limits.pids
        cpus = self._cpus + limits.cpus
        short = []
        if mem > self.budget.memory_bytes:
            short.append(f"memory: {mem >> 20} MiB asked in all, node budget {self.budget.memory_bytes >> 20} MiB")
        if pids > self.budget.pids:
            short.append(f"pids: {pids} asked in all, node budget {self.budget.pids}")
        if cpus > self.budget.cpus + 1e-9:
            short.append(f"cpus: {cpus:g} asked in all, node budget {self.budget.cpus:g}")
        if short:
            raise CapacityExceeded(
                f"node is full ({'; '.join(short)}); remove or stop sandboxes, ask for smaller "
                "limits, or raise the server's node budget")
        self._held[sandbox_id] = limits
        self._memory, self._pids, self._cpus = mem, pids, cpus

    def release(self, sandbox_id: str) -> None:
        limits = self._held.pop(sandbox_id, None)
        if limits is not None:
            self._memory -= limits.memory
            self._pids -= limits.pids
            self._cpus = max(0.0, self._cpus - limits.cpus) if self._held else 0.0

    def usage(self) -> dict[str, float]:
        """Memory (bytes), pids and cpus (cores) held now."""
        return {"memory_bytes": self._memory, "pids": self._pids, "cpus": self._cpus}
