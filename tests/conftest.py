"""Fixtures: a real runtime over the real image store, and a leak check after every sandbox test."""
from __future__ import annotations

import pytest

from checks import IMAGE, leftovers, remove_all_and_check


@pytest.fixture(scope="session")
def runtime():
    from tumbler.runtime.images import ImageStore
    from tumbler.runtime.process import ProcessRuntime
    if not ImageStore().exists(IMAGE):
        pytest.fail(f"image {IMAGE!r} is missing: run `make image` (or `tumbler image build`) first")
    return ProcessRuntime()


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
    remove_all_and_check(made, lambda sid: leftovers(runtime, sid))


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox()
