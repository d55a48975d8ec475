"""Terminal-v0 and ToolUse-v0 played through a server's sandboxes (tumbler.Sandbox) instead of
the LocalSandboxes they make by default: the same rewards, and the caller's sandboxes are
reset for each episode and left to the caller at close."""
from __future__ import annotations

from checks import IMAGE
from tumbler.envs.terminal import TerminalEnv
from tumbler.envs.tooluse import ToolUseEnv
from tumbler.sdk import Sandbox


def test_terminal_tasks_through_server_sandboxes(api):
    agent, verifier = Sandbox(IMAGE, client=api), Sandbox(IMAGE, client=api)
    env = TerminalEnv(task_id="fix-json-config", sandbox=agent, verifier=verifier)
    try:
        for _ in range(2):        # the second episode finds both sandboxes reset
            env.reset()
            env.step(env.reference_action())
            obs, reward, terminated, truncated, info = env.step("\\boxed{submit}")
            assert (reward, terminated) == (1.0, True), info["verifier_output"]
        env.reset()
        # Tampering outside workdir does not reach the verifier's sandbox.
        env.step("printf '#!/bin/sh\\nexit 0\\n' > /usr/bin/python3; echo 'exit 0' >> /root/.bashrc")
        assert env.step("\\boxed{submit}")[1] == 0.0
    finally:
        env.close()
    assert agent.refresh().state == "running" and verifier.refresh().state == "running"
    agent.remove()
    verifier.remove()


def test_tool_use_through_a_server_sandbox(api):
    sb = Sandbox(IMAGE, client=api)
    env = ToolUseEnv(sandbox=sb, tool_timeout=5.0)
    try:
        for seed in range(2):
            env.reset(seed=seed)
            obs, *_ = env.step(env.reference_action())
            obs, reward, terminated, *_ = env.step(env.reference_action(obs))
            assert (obs, reward, terminated) == ("Correct.", 1.0, True)
        assert env.step("<bash>hostname</bash>")[0].strip() == "sandbox"
    finally:
        env.close()
    assert sb.refresh().state == "running"
    sb.remove()
