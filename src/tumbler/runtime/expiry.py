"""A deadline for a sandbox made without a server (`tumbler local create --max-lifetime`).

The label `tumbler.expires-at` (unix seconds) says when the sandbox goes. A watcher process
started with it (`python -m tumbler.runtime.expiry ID`, in a session of its own: once the command
that started it has exited, init is its parent and reaps it) sleeps until then and removes it.
Should the watcher be gone (a reboot, a kill), the next process that opens the process runtime
removes every sandbox past its deadline, as it removes those whose owner died (`owners`).
"""
from __future__ import annotations

import subprocess
import sys
import time

EXPIRES_LABEL = "tumbler.expires-at"
POLL_S = 30.0        # the watcher looks at least this often whether its sandbox is still there


def labels_for(max_lifetime_s: float, now: float | None = None) -> dict[str, str]:
    """The label that gives a sandbox made now `max_lifetime_s` seconds to live."""
    if not max_lifetime_s > 0:
        raise ValueError(f"max lifetime must be a positive number of seconds, not {max_lifetime_s}")
    return {EXPIRES_LABEL: f"{(time.time() if now is None else now) + max_lifetime_s:.3f}"}


def deadline(labels: dict[str, str]) -> float | None:
    """When a sandbox with these labels expires (unix seconds); None: never (or unreadable)."""
    try:
        return float(labels[EXPIRES_LABEL])
    except (KeyError, ValueError):
        return None


def expired(labels: dict[str, str], now: float) -> bool:
    when = deadline(labels)
    return when is not None and now >= when


def watch(sandbox_id: str) -> None:
    """Start the watcher that removes `sandbox_id` at its deadline; it outlives the caller."""
    subprocess.Popen([sys.executable, "-m", "tumbler.runtime.expiry", sandbox_id],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _watch_until_due(sandbox_id: str) -> None:
    from tumbler.config import Paths
    from tumbler.errors import NotFound
    from tumbler.runtime.spec import SandboxInfo
    record = Paths.from_env().sandboxes / sandbox_id / "sandbox.json"
    while True:
        try:
            when = deadline(SandboxInfo.model_validate_json(record.read_text()).spec.labels)
        except (OSError, ValueError):
            return          # removed already (or not ours to judge)
        if when is None:
            return
        left = when - time.time()
        if left <= 0:
            break
        time.sleep(min(left, POLL_S))
    from tumbler.runtime.process import ProcessRuntime
    try:
        ProcessRuntime().remove(sandbox_id)   # opening the runtime sweeps it already; no matter
    except NotFound:
        pass


if __name__ == "__main__":
    _watch_until_due(sys.argv[1])
