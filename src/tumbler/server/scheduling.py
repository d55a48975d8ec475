"""The server's CPU scheduling policy: SCHED_BATCH (`ServerConfig.batch_scheduling`).

The server is a multiplexer between many agents and clients that all share the machine's cores.
Under Linux's normal policy each message that wakes it may preempt the agent or client that sent
it, and each one that it sends wakes, and often preempts, the server itself: a context switch or
two per command, and turns of the event loop that each handle one message. Under SCHED_BATCH
the server's wake-ups never preempt the running task (it runs when a core frees up or at the
scheduler's tick), so the senders finish their own turn and the server reads what accumulated in
one turn of its loop: fewer switches, fewer system calls and turns of the loop per command
(bench_server's 8-session aggregate: 5-10% less server CPU a command, docs/BENCHMARKS.md). A
round trip on an idle machine is unchanged: a waking task takes an idle core at once.

The policy is per thread and inherited by the threads and processes made after it is set. The
sandboxes' agents set themselves back to the normal policy when they start (`agent.server`), so
what runs in a sandbox is scheduled the same whatever started it; short helpers (runc, cp) and
the owner-expiry watchers keep the server's.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def use_batch_policy() -> bool:
    """Put the calling thread (and what it starts from now on) under SCHED_BATCH at its
    current nice value -> whether it took effect (False where the OS has no such policy)."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:   # a seccomp profile or an LSM that refuses it: serve all the same
        log.warning("could not set the server's scheduling policy to SCHED_BATCH (%s); it "
                    "serves under the normal policy", exc)
        return False
    return True
