"""Prometheus metrics: request latency and errors here; sandboxes by state read at scrape time."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from tumbler import memstats
from tumbler.runtime.spec import SandboxState

REGISTRY = CollectorRegistry(auto_describe=True)

REQUEST_SECONDS = Histogram(
    "tumbler_request_seconds", "HTTP request latency, seconds", ["method", "route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
    registry=REGISTRY)
ERRORS = Counter("tumbler_errors", "error replies by kind", ["kind"], registry=REGISTRY)


class SandboxCollector:
    """Counts sandboxes by state from the service at each scrape (no bookkeeping on the hot path)."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        family = GaugeMetricFamily("tumbler_sandboxes", "sandboxes by state", labels=["state"])
        counts = {state: 0 for state in SandboxState if state is not SandboxState.REMOVED}
        for record in self.service.list():
            counts[record.state] += 1
        for state, n in counts.items():
            family.add_metric([state.value], n)
        yield family
        usage = self.service.admission.usage()
        held = GaugeMetricFamily("tumbler_admitted", "limits held by admitted sandboxes "
                                 "(memory bytes, pids, cpu cores)", labels=["resource"])
        for name, value in usage.items():
            held.add_metric([name], value)
        yield held


class MemoryCollector:
    """What the server's memory is made of (tumbler.memstats), read at each scrape: a long run's
    RSS growth is live data when the heap in use or the Python blocks grow with it, and the
    allocator holding freed memory when only the heap held free does."""

    def collect(self):
        mem = memstats.read()
        family = GaugeMetricFamily("tumbler_process_memory_bytes",
                                   "server process memory: rss, heap_in_use, heap_free (glibc)",
                                   labels=["part"])
        family.add_metric(["rss"], mem.rss_kb << 10)
        if mem.heap_in_use_kb >= 0:
            family.add_metric(["heap_in_use"], mem.heap_in_use_kb << 10)
            family.add_metric(["heap_free"], mem.heap_free_kb << 10)
        yield family
        yield GaugeMetricFamily("tumbler_python_allocated_blocks",
                                "Python objects and buffers alive", value=mem.py_blocks)
