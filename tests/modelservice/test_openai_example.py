"""examples/openai_agent.py, unmodified `openai` package, in a sandbox with the network off.

The image gets the package once: pip installs it on the host (PyPI) into a folder that is
copied into a sandbox of the test image, which is saved as OPENAI_IMAGE and reused later.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from checks import IMAGE
from scripted import serve_until_ended
from tumbler.modelservice import AsyncModelBridge

OPENAI_IMAGE = f"{IMAGE}-openai"
SITE = "/usr/local/lib/python3.11/dist-packages"   # on the image's python3 path
PIP_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def openai_image(runtime, tmp_path_factory):
    """The test image plus the openai package (built once, kept by name)."""
    from tumbler.local import LocalSandbox
    from tumbler.runtime.images import ImageStore
    if ImageStore().exists(OPENAI_IMAGE):
        return OPENAI_IMAGE
    target = tmp_path_factory.mktemp("openai-site")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-compile",
                          "--target", str(target), "openai"],
                         capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if pip.returncode != 0:
        pytest.skip(f"cannot install openai from PyPI here: {pip.stderr[-500:]}")
    with LocalSandbox(image=IMAGE, runtime=runtime) as sb:
        sb.upload(target, SITE)
        sb.snapshot(OPENAI_IMAGE)
    return OPENAI_IMAGE


@pytest.mark.asyncio
async def test_openai_example_plays_through_the_endpoint(agent_sandbox, openai_image):
    sb = agent_sandbox(image=openai_image)
    async with AsyncModelBridge() as bridge:
        await bridge.attach(sb)
        for seed in (1, 2):
            await bridge.start_episode(sb.id, ["python3", "/root/openai_agent.py", "--seed", str(seed)]
                                       + (["--stream"] if seed == 2 else []))
        ended = await serve_until_ended(bridge, 2)
    for e in ended:
        assert e.exit_code == 0, e.output
        assert json.loads(e.output.splitlines()[-1])["solved"] is True
    for t in bridge.trajectories():
        assert t.exchanges and all(x.status == 200 for x in t.exchanges)
        assert t.exchanges[0].request["model"] == "policy"
