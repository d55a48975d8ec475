"""`tumbler serve` on the docker backend (`backend: docker`): sandboxes as containers of
Podman's Docker-API service here, through the same routes and SDK; a warm pool's too."""
from __future__ import annotations

import signal
import time

from checks import IMAGE, docker_leftovers
from server_process import ServerProcess
from test_backends import _docker_runtime

POOL_TIMEOUT_S = 120.0


def test_a_sandbox_made_through_the_server_on_the_docker_backend_runs_a_command(tmp_path):
    engine = _docker_runtime()   # Podman's service up (started if need be), the image in it
    srv = ServerProcess(tmp_path, backend="docker", engine=engine.url,
                        pools=[{"name": "warm", "size": 1, "image": IMAGE}]).start()
    made = []
    try:
        with srv.client() as client:
            assert [n.backend for n in client.nodes()] == ["docker"]
            deadline = time.monotonic() + POOL_TIMEOUT_S
            while (pool := client.pools()[0]).ready < 1:
                assert time.monotonic() < deadline, f"the pool did not fill: {pool}"
                time.sleep(0.2)
            pooled = client.create(IMAGE)          # a handover from the warm pool
            cold = client.create(IMAGE, env={"WHO": "cold"})   # another spec: made now
            made += [pooled.id, cold.id]
            assert client.pools()[0].handed_out == 1
            for sb in (pooled, cold):
                assert sb.info.runtime == "docker"
                assert engine.api.containers(filters={"label": f"tumbler.sandbox={sb.id}"})
                out = sb.run("echo hi $WHO; cd /tmp && pwd")
                assert (out.exit_code, out.output) == (0, f"hi {sb.info.spec.env.get('WHO', '')}"
                                                          .rstrip() + "\n/tmp\n")
                assert sb.run("pwd").output == "/tmp\n"   # the same session
            pooled.remove()
            assert docker_leftovers(engine, pooled.id) == []
    finally:
        assert srv.terminate() in (0, -signal.SIGTERM)
    for sandbox_id in made:   # the rest: the server removed them at its shutdown
        assert docker_leftovers(engine, sandbox_id) == []
