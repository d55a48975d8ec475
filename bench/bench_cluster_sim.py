"""The control plane alone: 10,000 sandboxes placed over 100 simulated node hosts that answer at once.

    .venv/bin/python bench/bench_cluster_sim.py [--sandboxes 10000] [--nodes 100]

No sandbox is made: the node hosts are simulated (`SimulatedHosts`, a Runtime whose create,
start and remove answer at once), so what is timed is what the server itself does for each
sandbox in cluster mode: placement (cluster/placement.py over N nodes, spread), admission, the
registry's writes (SQLite in a temp dir, as `tumbler serve` keeps it) and the service's
bookkeeping, all through `SandboxService.create` and `.remove` as the routes call them, every
create of the burst at once. Figures: placement alone (us per sandbox), registry alone (ms per
sandbox: its add and its state change), the whole create (ms per sandbox), the time for all of
them, and the spread it reached (sandboxes per node, min and max). Writes
bench/results/cluster_sim.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from tumbler import wire
from tumbler.cluster.config import ClusterConfig
from tumbler.cluster.placement import Budget, Placement
from tumbler.errors import NotFound
from tumbler.runtime.spec import Limits, SandboxInfo, SandboxSpec, SandboxState
from tumbler.server.config import ServerConfig
from tumbler.server.registry import Registry
from tumbler.server.service import SandboxService

RESULTS = Path(__file__).parent / "results" / "cluster_sim.json"
NODE_BUDGET = Budget(64 << 30, 1 << 20, 64.0)


class SimulatedHosts:
    """A Runtime over simulated node hosts: placement as the cluster mode's, answers at once."""

    name = "simulated"

    def __init__(self, nodes: int):
        self.cold_starts = nodes * ClusterConfig().start_concurrency   # as ClusterRuntime's
        self._lock = threading.Lock()      # the service calls from its worker threads
        self.placement = Placement("spread")
        for i in range(nodes):
            self.placement.add_node(f"sim/{i:03d}", NODE_BUDGET, {"zone": f"z{i % 4}"})
        self._infos: dict[str, SandboxInfo] = {}

    def create(self, spec: SandboxSpec, sandbox_id: str | None = None) -> SandboxInfo:
        with self._lock:
            self.placement.choose(sandbox_id, spec)
        info = self._infos[sandbox_id] = SandboxInfo(id=sandbox_id, state=SandboxState.CREATED,
                                                     spec=spec, created=time.time(),
                                                     runtime=self.name)
        return info

    def start(self, sandbox_id: str) -> SandboxInfo:
        info = self.get(sandbox_id)
        info.state = SandboxState.RUNNING
        return info

    def remove(self, sandbox_id: str) -> None:
        self._infos.pop(sandbox_id, None)
        with self._lock:
            self.placement.release(sandbox_id)

    def get(self, sandbox_id: str) -> SandboxInfo:
        try:
            return self._infos[sandbox_id]
        except KeyError:
            raise NotFound(f"no sandbox {sandbox_id}") from None

    def list(self) -> list[SandboxInfo]:
        return list(self._infos.values())


def placement_alone(n: int, nodes: int) -> float:
    """Seconds per placement of `n` sandboxes over `nodes` nodes (choose, then release)."""
    hosts = SimulatedHosts(nodes)
    spec = SandboxSpec(image="debian", limits=Limits(memory="128m", cpus=0.1))
    t = time.perf_counter()
    for i in range(n):
        hosts.placement.choose(f"p{i}", spec)
    return (time.perf_counter() - t) / n


def registry_alone(n: int, state_dir: str) -> float:
    """Seconds per sandbox of the registry's writes for a create (its add and its state change)."""
    registry = Registry(f"sqlite:///{state_dir}/alone.db")
    spec = SandboxSpec(image="debian")
    t = time.perf_counter()
    for i in range(n):
        now = time.time()
        registry.add(wire.SandboxOut(id=f"r{i}", spec=spec, state=SandboxState.CREATED, created=now,
                                     last_active=now, ttl_s=None, expires_at=None, runtime="sim"))
        registry.set_state(f"r{i}", SandboxState.RUNNING)
    per = (time.perf_counter() - t) / n
    registry.close()
    return per


async def through_service(n: int, nodes: int, state_dir: str) -> dict:
    hosts = SimulatedHosts(nodes)
    config = ServerConfig(state_dir=state_dir, node_memory_bytes=NODE_BUDGET.memory_bytes * nodes,
                          node_cpus=NODE_BUDGET.cpus * nodes, node_pids=NODE_BUDGET.pids * nodes)
    service = SandboxService(config, hosts, Registry(config.database_url))
    await service.open()
    req = wire.CreateSandboxRequest(image="debian", limits={"memory": "128m", "cpus": 0.1})
    answered: list[float] = []
    t0 = time.perf_counter()

    async def one():
        record = await service.create(req)
        answered.append(time.perf_counter() - t0)
        return record
    records = await asyncio.gather(*(one() for _ in range(n)))
    all_s = time.perf_counter() - t0
    counts = [len(s.held) for s in hosts.placement.nodes.values()]
    t = time.perf_counter()
    await asyncio.gather(*(service.remove(r.id) for r in records))
    remove_s = time.perf_counter() - t
    await service.close(keep_sandboxes=False)
    answered.sort()
    return {"all_created_s": all_s, "create_ms_per_sandbox": all_s / n * 1e3,
            "first_answer_s": answered[0], "median_answer_s": answered[len(answered) // 2],
            "remove_all_s": remove_s, "per_node_min": min(counts), "per_node_max": max(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sandboxes", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tumbler-bench-sim-") as state:
        res = {"sandboxes": args.sandboxes, "nodes": args.nodes,
               "placement_us_per_sandbox": placement_alone(args.sandboxes, args.nodes) * 1e6,
               "registry_ms_per_sandbox": registry_alone(min(args.sandboxes, 2000), state) * 1e3}
        res.update(asyncio.run(through_service(args.sandboxes, args.nodes, state)))
    res.update(host=platform.node(), cores=os.cpu_count(),
               when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(json.dumps(res, indent=2))
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
