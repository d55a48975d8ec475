"""`tumbler serve --ray ADDRESS`: the same server and SDK, sandboxes placed on the node hosts of a
Ray cluster (two nodes on this machine) by budget, labels and policy, every call routed to the
right host; GET /v1/nodes shows each node."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
import server_process  # noqa: E402
from checks import IMAGE, leftovers  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from server_process import ServerProcess  # noqa: E402
from tumbler.errors import CapacityExceeded  # noqa: E402
from tumbler.sdk import Sandbox  # noqa: E402

server_process.START_TIMEOUT_S = 180.0   # joining Ray and starting a host per node


def test_server_places_and_routes_over_two_nodes(runtime, tmp_path):
    ids: list[str] = []
    with local_cluster(["a", "b"]) as lc:
        srv = ServerProcess(tmp_path, ray=lc.cluster.address, node_memory_bytes=1 << 30)
        srv.start()
        client = srv.client()

        def nodes() -> dict[str, dict]:
            return {n.labels.get("tumbler-host"): n.model_dump() for n in client.nodes()}
        try:
            assert {k: v["state"] for k, v in nodes().items()} == {"a": "alive", "b": "alive"}
            assert nodes()["a"]["budget"]["memory_bytes"] == 1 << 30   # the node budget, per node
            shown = subprocess.run([sys.executable, "-m", "tumbler.cli", "node", "ls", "--url", srv.url,
                                    "--token", srv.token], capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            assert "/a" in shown.stdout and "/b" in shown.stdout and "alive" in shown.stdout

            boxes = [Sandbox(IMAGE, client=client, memory="128m") for _ in range(4)]
            ids += [sb.id for sb in boxes]
            # spread: two on each node
            assert sorted(n["sandboxes"].get("running", 0) for n in nodes().values()) == [2, 2]
            pinned = Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": "b"})
            ids.append(pinned.id)
            assert nodes()["b"]["sandboxes"]["running"] == 3

            # every call reaches its sandbox's host: sessions, exec, files, life cycle
            for sb in [*boxes, pinned]:
                assert sb.run(f"echo {sb.id}").output == f"{sb.id}\n"
            pinned.write_file("/tmp/x", b"\x00bytes\xff")
            assert pinned.read_bytes("/tmp/x") == b"\x00bytes\xff"
            assert pinned.exec(["cat", "/tmp/x"]).stdout_bytes == b"\x00bytes\xff"
            s = pinned.session("named")
            assert s.run("cd /tmp && pwd").output == "/tmp\n"
            pinned.stop()
            pinned.start()
            assert pinned.run("echo again").output == "again\n"

            # what no node can satisfy is a clear error naming the missing resource or label
            with pytest.raises(CapacityExceeded, match="no live node has the labels tumbler-host=c"):
                Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": "c"})
            with pytest.raises(CapacityExceeded, match="short of memory"):
                Sandbox(IMAGE, client=client, memory="900m")

            for sb in [*boxes, pinned]:
                sb.remove()
            assert all(not n["sandboxes"] for n in nodes().values())
        finally:   # a graceful stop removes what is left and stops the node hosts
            assert srv.terminate(120) in (0, -15)
    reap_zombies()
    for sid in ids:
        assert leftovers(runtime, sid) == []
