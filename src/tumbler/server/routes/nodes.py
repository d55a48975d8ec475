"""/v1/nodes: the machines that run this server's sandboxes (one: this host), budget and load."""
from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter

from fastapi import APIRouter, Request

from tumbler import wire
from tumbler.server.routes import json_response, service

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])


@router.get("", response_model=wire.NodeList)
async def list_nodes(request: Request):
    return json_response(wire.NodeList(nodes=await all_nodes(request)))


async def all_nodes(request: Request) -> list[wire.NodeOut]:
    """Cluster mode: each node host; else this host (the console's event stream sends these too)."""
    if hasattr(service(request).runtime, "nodes"):
        return await asyncio.to_thread(cluster_nodes, request)
    return [this_node(request)]


def cluster_nodes(request: Request) -> list[wire.NodeOut]:
    """The cluster's node hosts as the placement knows them (Ray's view of each node's
    resources; no load average: Ray does not report one)."""
    svc = service(request)
    resources = {n["NodeID"]: n.get("Resources") or {} for n in _ray_nodes()}
    out = []
    known = set(svc.ids())
    for node in svc.runtime.nodes():
        res = resources.get(node["node_id"], {})
        held = [sid for sid in node["sandbox_ids"] if sid in known]
        counts = Counter(svc.get(sid).state for sid in held)
        out.append(wire.NodeOut(
            name=node["host_id"], budget=node["budget"], admitted=node["admitted"],
            sandboxes=dict(counts), cpus=int(res.get("CPU", 0)), load=[],
            memory_total_bytes=int(res.get("memory", 0)),
            memory_available_bytes=max(0, int(res.get("memory", 0)) - node["admitted"]["memory_bytes"]),
            state=node["state"], lost=node["lost"], backend=node["backend"],
            address=node["address"], labels=node["labels"],
            sandbox_ids=held, images=node.get("images", {})))
    return out


def _ray_nodes() -> list[dict]:
    import ray
    return ray.nodes()


def this_node(request: Request) -> wire.NodeOut:
    svc = service(request)
    budget = svc.admission.budget
    total, available = _meminfo()
    return wire.NodeOut(
        name=socket.gethostname(), backend=svc.runtime.name,
        budget={"memory_bytes": budget.memory_bytes, "pids": budget.pids, "cpus": budget.cpus},
        admitted=svc.admission.usage(),
        sandboxes=_by_state(request),
        cpus=os.cpu_count() or 1, load=list(os.getloadavg()),
        memory_total_bytes=total, memory_available_bytes=available, sandbox_ids=svc.ids())


def _by_state(request: Request) -> dict[str, int]:
    """Sandboxes by state; those waiting in warm pools (no one's yet) as `pooled`."""
    counts = dict(Counter(r.state for r in service(request).list()))
    pooled = sum(p.ready + p.starting for p in request.app.state.pools.list())
    if pooled:
        counts["pooled"] = pooled
    return counts


def _meminfo() -> tuple[int, int]:
    """MemTotal and MemAvailable, bytes (0 where /proc/meminfo does not say)."""
    values = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)
