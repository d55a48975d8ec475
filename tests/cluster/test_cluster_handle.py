"""The sandbox handle's Ray transport: a hosted env played through a cluster sandbox exactly as
through a LocalSandbox, and a batch of ops over the cluster (the parity suite's cluster share)."""
from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

from checks import IMAGE, leftovers  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from tumbler import ops  # noqa: E402
from tumbler.cluster import ClusterClient, ClusterConfig  # noqa: E402
from tumbler.envs.hosted import HostedEnv, HostedVectorEnv  # noqa: E402
from tumbler.errors import NotFound  # noqa: E402
from tumbler.handle import SandboxHandle, do  # noqa: E402
from tumbler.runtime.spec import Limits, SandboxSpec  # noqa: E402


def _episode(env, seed: int) -> list:
    first = env.reset(seed=seed)
    steps = [env.step(str(g)) for g in (50, 25, 75)]
    return [first, *[(o, r, t, tr) for o, r, t, tr, _ in steps]]


def test_hosted_env_and_batches_through_a_cluster_sandbox(runtime, make_sandbox):
    ids: list = []
    with local_cluster(["a"]):
        client = ClusterClient(ClusterConfig(start_timeout_s=60, op_timeout_s=60))
        try:
            client.start_hosts()
            ids = client.create(2, SandboxSpec(image=IMAGE, limits=Limits(memory="128m")))
            boxes = [client.sandbox(sid) for sid in ids]
            assert isinstance(boxes[0], SandboxHandle)
            r = do(boxes[0], ops.run("exit 5"))
            assert (r.exit_code, r.session_alive) == (5, False)
            assert do(boxes[0], ops.run("echo back")).output == "back\n"

            remote = HostedEnv(boxes[0], "GuessTheNumber-v0")
            local = HostedEnv(make_sandbox(), "GuessTheNumber-v0")
            assert _episode(remote, 11) == _episode(local, 11)
            remote.close()
            local.close()

            answers = client.call_many([(sid, ops.exec_(["echo", sid])) for sid in ids]
                                       + [("nosuch", ops.health())])
            assert [a.stdout for a in answers[:2]] == [f"{sid}\n" for sid in ids]
            assert isinstance(answers[2], NotFound)
            vec = HostedVectorEnv("GuessTheNumber-v0", sandboxes=boxes)
            obs, _ = vec.reset(seed=2)
            assert len(obs) == 2
            vec.close()
            with pytest.raises(NotFound):
                client.sandbox("nosuch")
        finally:
            client.close()
    reap_zombies()
    for sid in ids:
        assert leftovers(runtime, sid) == []
