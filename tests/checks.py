"""What tests share: the image they use and the check that a removed sandbox left nothing behind."""
from __future__ import annotations

import os
import subprocess

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")


def leftovers(runtime, sandbox_id: str) -> list[str]:
    """Everything a removed sandbox could have left behind on the host."""
    from tumbler.runtime import cgroups, disks
    found = []
    if (runtime.paths.sandboxes / sandbox_id).exists():
        found.append(f"directory {runtime.paths.sandboxes / sandbox_id}")
    if (runtime.paths.runc_root / f"tmb-{sandbox_id}").exists():
        found.append("runc state")
    if os.path.exists(runtime.agent_socket(sandbox_id)):
        found.append("agent socket")
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if sandbox_id in line]
    found += [f"cgroup {p}" for p in cgroups.leftover_dirs(f"tumbler/{sandbox_id}")]
    found += [f"loop device {d}" for d in disks.loop_devices_of(f"/{sandbox_id}/")]
    ps = subprocess.run(["ps", "-eo", "pid,stat,cgroup:512"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if f"tumbler/{sandbox_id}" in line]
    return found
