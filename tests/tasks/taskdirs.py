"""Writing small task folders for the tests (Harbor and Terminal-Bench 1)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from tumbler.runtime.images import ImageStore

CHECK_ANSWER = """#!/bin/bash
mkdir -p /logs/verifier
if python3 -I -c 'import sys; sys.exit(open("/root/answer.txt").read().strip() != "42")'; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
"""


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    if mode is not None:
        path.chmod(mode)
    return path


def harbor_task(root: Path, name: str = "answer", *, test_sh: str = CHECK_ANSWER,
                solve_sh: str = "echo 42 > /root/answer.txt\n",
                dockerfile: str = "FROM debian:bookworm\nWORKDIR /root\n",
                agent_timeout: float = 60, verifier_timeout: float = 60,
                instruction: str = "Write 42 to /root/answer.txt.") -> Path:
    d = root / name
    write(d / "task.toml", f"""
    version = "1.0"
    [metadata]
    difficulty = "easy"
    [agent]
    timeout_sec = {agent_timeout}
    [verifier]
    timeout_sec = {verifier_timeout}
    [environment]
    memory_mb = 512
    """)
    write(d / "instruction.md", instruction)
    write(d / "environment" / "Dockerfile", dockerfile)
    write(d / "tests" / "test.sh", test_sh, 0o755)
    write(d / "solution" / "solve.sh", solve_sh, 0o755)
    return d


def new_images_removed(before: set[str]) -> None:
    """Remove the build-step images and test images ("t-*") made since `before`, children
    first (images of other names, a concurrent user's, are left alone)."""
    store = ImageStore()
    for _ in range(50):
        extra = [i for i in store.list() if i.name not in before
                 and i.name.startswith(("build.", "t-"))]
        if not extra:
            return
        parents = {i.parent for i in extra}
        for image in extra:
            if image.name not in parents:
                store.remove(image.name)
