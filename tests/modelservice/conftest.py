"""Fixtures for model service tests: sandboxes holding the example agent programs."""
from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def agent_sandbox(make_sandbox):
    """A sandbox with the example agent programs in /root."""
    def make(**kwargs):
        sb = make_sandbox(**kwargs)
        for name in ("urllib_agent.py", "openai_agent.py"):
            sb.write_file(f"/root/{name}", (EXAMPLES / name).read_text())
        return sb
    return make
