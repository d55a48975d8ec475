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

    def reserve(self, sandbox_id: str, limits: Limits) -> None:
        """Hold a place for `sandbox_id`, or raise CapacityExceeded naming what is short."""
        if sandbox_id in self._held:
            return
        mem = sum(l.memory for l in self._held.values()) + limits.memory
        pids = sum(l.pids for l in self._held.values()) + limits.pids
        cpus = sum(l.cpus for l in self._held.values()) + limits.cpus
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

    def release(self, sandbox_id: str) -> None:
        self._held.pop(sandbox_id, None)

    def usage(self) -> dict[str, float]:
        """Memory (bytes), pids and cpus (cores) held now."""
        return {"memory_bytes": sum(l.memory for l in self._held.values()),
                "pids": sum(l.pids for l in self._held.values()),
                "cpus": sum(l.cpus for l in self._held.values())}
