"""The sandbox handle over HTTP: one op, a batch of ops over many sandboxes, and hosted envs played
through a server's `Sandbox` exactly as through a `LocalSandbox`."""
from __future__ import annotations

import asyncio

import pytest

from checks import IMAGE
from test_envs_http import play_guess
from tumbler import Sandbox, ops
from tumbler.envs.hosted import HostedEnv, HostedVectorEnv
from tumbler.errors import InvalidRequest, NotFound
from tumbler.handle import SandboxHandle, do


def _play(env) -> dict:
    env.reset(seed=3)

    def step(action):
        obs, reward, terminated, truncated, _ = env.step(action)
        return {"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated}
    return play_guess(step)


def test_one_op_through_the_server_is_the_agents_answer(api):
    sb = Sandbox(IMAGE, client=api)
    assert isinstance(sb, SandboxHandle)
    r = do(sb, ops.run("echo hi; exit 3"))
    assert (r.output, r.exit_code, r.session_alive) == ("hi\nexit\n", 3, False)
    assert do(sb, ops.run("echo again")).output == "again\n"        # a fresh default session
    assert do(sb, ops.exec_(["cat"], stdin=b"\x00\xff")).stdout_bytes == b"\x00\xff"
    with pytest.raises(InvalidRequest, match="cannot be sent"):
        sb.call("shutdown")


def test_hosted_env_over_a_server_sandbox(api, make_sandbox):
    """The same game, the same seed, through both transports: the same episode."""
    remote = HostedEnv(Sandbox(IMAGE, client=api), "GuessTheNumber-v0")
    local = HostedEnv(make_sandbox(), "GuessTheNumber-v0")
    assert remote.reset(seed=3) == local.reset(seed=3)
    assert _play(remote) == _play(local)
    assert _play(remote)["reward"] == 1.0
    remote.close()
    local.close()


def test_batched_ops_step_many_sandboxes_in_one_request(api):
    boxes = [Sandbox(IMAGE, client=api) for _ in range(3)]
    handles = api.call_many([(sb.id, ops.env_make("GuessTheNumber-v0")) for sb in boxes])
    obs = api.call_many([(sb.id, ops.env_reset(h, 5, 30)) for sb, h in zip(boxes, handles)])
    assert len({o for o, _ in obs}) == 1                      # same seed, same instance
    steps = api.call_many([(sb.id, ops.env_step(h, "50", 30)) for sb, h in zip(boxes, handles)]
                          + [("nosuchbox0000", ops.env_step("x", "50", 30))])
    assert all(isinstance(s, tuple) and len(s) == 5 for s in steps[:3])
    assert steps[0] == steps[1] == steps[2]
    assert isinstance(steps[3], NotFound)                     # one bad call, its own answer
    vec = HostedVectorEnv("GuessTheNumber-v0", sandboxes=boxes)
    first, _ = vec.reset(seed=5)
    assert len(first) == 3
    vec.close()
    assert all(sb.run("true").ok for sb in boxes)             # not removed: not the env's


def test_async_sandbox_call_and_batch(server, new_aclient):
    async def go():
        async with new_aclient() as client:
            sb = await client.create(IMAGE)
            assert (await sb.do(ops.run("echo $((6*7))"))).output == "42\n"
            [a, b] = await client.call_many([(sb.id, ops.run("echo a")), (sb.id, ops.stat("/nope"))])
            assert a.output == "a\n" and isinstance(b, NotFound)
            await sb.remove()
    asyncio.run(go())
