"""Fixtures: a real runtime over the real image store, and a leak check after every sandbox test."""
from __future__ import annotations

import os
import subprocess

import pytest

IMAGE = os.environ.get("TUMBLER_TEST_IMAGE", "debian")


@pytest.fixture(scope="session")
def runtime():
    from tumbler.runtime.images import ImageStore
    from tumbler.runtime.process import ProcessRuntime
    if not ImageStore().exists(IMAGE):
        pytest.fail(f"image {IMAGE!r} is missing: run `make image` (or `tumbler image build`) first")
    return ProcessRuntime()


def leftovers(runtime, sandbox_id: str) -> list[str]:
    """Everything a removed sandbox could have left behind on the host."""
    from tumbler.runtime import cgroups
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
    ps = subprocess.run(["ps", "-eo", "pid,stat,cgroup:512"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if f"tumbler/{sandbox_id}" in line]
    return found


@pytest.fixture
def make_sandbox(runtime):
    """Make LocalSandboxes; on teardown remove them and assert that nothing is left behind."""
    from tumbler.local import LocalSandbox
    made = []

    def make(**kwargs):
        kwargs.setdefault("image", IMAGE)
        sb = LocalSandbox(runtime=runtime, **kwargs)
        made.append(sb)
        return sb

    yield make
    for sb in made:
        try:
            sb.remove()
        except Exception:
            pass
    for sb in made:
        assert leftovers(runtime, sb.id) == []


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox()
