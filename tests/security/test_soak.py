"""Soak: sandboxes made, used, reset and removed in a loop; the owning process's memory and open
file descriptors stay flat, and nothing is left behind. TUMBLER_SOAK_SECONDS sets the length
(default 1800), TUMBLER_SOAK_BATCH how many sandboxes live at once (default 8).
`python bench/soak.py` runs the same loop standalone and draws the curves (docs/soak.png)."""
from __future__ import annotations

import os

import pytest

import soak_loop
from checks import IMAGE

SECONDS = float(os.environ.get("TUMBLER_SOAK_SECONDS", "1800"))
BATCH = int(os.environ.get("TUMBLER_SOAK_BATCH", "8"))

pytestmark = [pytest.mark.slow, pytest.mark.security]


@pytest.mark.timeout(SECONDS + 300)  # the project's 300 s default would cut the soak short
def test_soak_memory_and_fds_stay_flat(runtime):
    seconds, batch = SECONDS, BATCH
    result = soak_loop.run(runtime, IMAGE, seconds, batch)
    assert result.errors == []
    assert result.sandboxes > 0 and len(result.samples) >= 4, "too short to judge; raise the seconds"
    assert result.flat() == []
    assert soak_loop.leftovers_of(runtime, result.ids()) == []
