"""Cluster mode with a docker-backend node: `cluster: {node_backends: {NAME: docker}}` gives that
node's host the docker runtime (Podman's engine here), the others keep the process runtime;
the same server, routes and SDK place and drive sandboxes on both."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
import server_process  # noqa: E402
from checks import IMAGE, docker_leftovers, leftovers  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from server_process import ServerProcess  # noqa: E402
from test_backends import _docker_runtime  # noqa: E402
from tumbler.runtime.process import ProcessRuntime  # noqa: E402
from tumbler.sdk import Sandbox  # noqa: E402

server_process.START_TIMEOUT_S = 180.0   # joining Ray and starting a host per node
A, B = f"pa{os.getpid()}", f"dk{os.getpid()}"


@pytest.mark.slow
def test_a_docker_node_beside_a_process_node(tmp_path):
    engine = _docker_runtime()   # Podman's service up, the image in its store
    made: dict[str, str] = {}
    with local_cluster([A, B]) as lc:
        srv = ServerProcess(tmp_path, ray=lc.cluster.address, node_memory_bytes=1 << 30,
                            cluster={"node_backends": {B: "docker"}, "engine": engine.url})
        srv.start()
        try:
            with srv.client() as client:
                assert {n.labels["tumbler-host"]: n.backend for n in client.nodes()} == {
                    A: "process", B: "docker"}
                for name, backend in ((A, "process"), (B, "docker")):
                    sb = Sandbox(IMAGE, client=client, memory="128m",
                                 labels={"tumbler.node/tumbler-host": name})
                    made[sb.id] = backend
                    assert sb.info.runtime == backend
                    out = sb.run("cd /tmp && echo on $(pwd)")
                    assert (out.exit_code, out.output) == (0, "on /tmp\n")
                    assert sb.run("pwd").output == "/tmp\n"   # the same session
                docker_ids = [s for s, b in made.items() if b == "docker"]
                assert engine.api.containers(filters={"label": f"tumbler.sandbox={docker_ids[0]}"})
                client.get(docker_ids[0]).remove()
                assert docker_leftovers(engine, docker_ids[0]) == []
        finally:   # a graceful stop removes what is left and stops the node hosts
            assert srv.terminate(120) in (0, -15)
    reap_zombies()
    for sid, backend in made.items():
        assert (docker_leftovers(engine, sid) if backend == "docker"
                else leftovers(ProcessRuntime(), sid)) == []
