"""`tumbler serve --ray ADDRESS`: the same server and SDK, sandboxes placed on the node hosts of a
Ray cluster (two nodes on this machine) by budget, labels and policy, every call routed to the
right host (streamed output relayed as it comes, a fork's children on their source's node);
GET /v1/nodes shows each node; a node killed turns its sandboxes lost; the server SIGKILLed
and restarted takes its hosts over."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
import server_process  # noqa: E402
from checks import IMAGE, leftovers, wait_for  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from server_process import ServerProcess  # noqa: E402
from test_rock_compat import _have_rock, needs_rock, run_client  # noqa: E402
import ray  # noqa: E402
from tumbler.cluster.client import actor_name  # noqa: E402
from tumbler.cluster.nodehost import HOST_LABEL  # noqa: E402
from tumbler.errors import CapacityExceeded, TumblerError  # noqa: E402
from tumbler.config import Paths  # noqa: E402
from tumbler.runtime.images import ImageStore  # noqa: E402
from tumbler.runtime.process import ProcessRuntime  # noqa: E402
from tumbler.runtime.spec import SandboxSpec  # noqa: E402
from tumbler.sdk import Sandbox, core  # noqa: E402

server_process.START_TIMEOUT_S = 180.0   # joining Ray and starting a host per node
# Node names of this run only: a host id is hostname/name, and a host that starts reclaims
# (removes) every sandbox of its id, so another run on this machine must not share them.
A, B = f"a{os.getpid()}", f"b{os.getpid()}"


@contextmanager
def cluster_server(tmp_path, ids: list[str], **settings):
    """A 2-node local Ray cluster, a server in cluster mode over it (with `settings` of its
    configuration), a client; on leaving, the server stopped (removing what is left), the
    cluster shut down, and no sandbox left behind."""
    with local_cluster([A, B]) as lc:
        srv = ServerProcess(tmp_path, ray=lc.cluster.address, node_memory_bytes=1 << 30,
                            reap_interval_s=1.0, **settings)
        srv.start()
        client = srv.client()

        def nodes() -> dict[str, dict]:
            return {n.labels.get("tumbler-host"): n.model_dump() for n in client.nodes()}
        try:
            yield lc, srv, client, nodes
        finally:   # a graceful stop removes what is left and stops the node hosts
            hosts = [n.name for n in client.nodes()] if srv.proc.poll() is None else []
            assert srv.terminate(120) in (0, -15)
            for host in hosts:   # the shutdown ran to its end: it closed every host it had
                with pytest.raises(ValueError):
                    ray.get_actor(actor_name(host), namespace="tumbler")
            # and nothing could cut it short: Ray's failure signal handler (absl's) took the
            # SIGTERM, dumped a stack and ended the server ~3 s in, before a shutdown of more
            # than a few sandboxes had removed them
            assert b"SIGTERM received" not in (tmp_path / "server.log").read_bytes()
    reap_zombies()
    runtime = ProcessRuntime()
    for sid in ids:
        assert leftovers(runtime, sid) == []


def node_ls(srv) -> str:
    shown = subprocess.run([sys.executable, "-m", "tumbler.cli", "node", "ls", "--url", srv.url,
                            "--token", srv.token], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_server_places_and_routes_over_two_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("TUMBLER_ROCK_DEFAULT_IMAGE", IMAGE)   # ROCK's "python:3.11": the test image
    ids: list[str] = []
    with cluster_server(tmp_path, ids) as (lc, srv, client, nodes):
        assert {k: v["state"] for k, v in nodes().items()} == {A: "alive", B: "alive"}
        assert {v["backend"] for v in nodes().values()} == {"process"}
        assert nodes()[A]["budget"]["memory_bytes"] == 1 << 30   # the node budget, per node
        shown = node_ls(srv)
        assert f"/{A}" in shown and f"/{B}" in shown and "alive" in shown and "process" in shown

        boxes = [Sandbox(IMAGE, client=client, memory="128m") for _ in range(4)]
        ids += [sb.id for sb in boxes]
        # spread: two on each node
        assert sorted(n["sandboxes"].get("running", 0) for n in nodes().values()) == [2, 2], nodes()
        pinned = Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": B})
        ids.append(pinned.id)
        assert nodes()[B]["sandboxes"]["running"] == 3

        # every call reaches its sandbox's host: sessions, exec, files, life cycle
        for sb in [*boxes, pinned]:
            assert sb.run(f"echo {sb.id}").output == f"{sb.id}\n"
        pinned.write_file("/tmp/x", b"\x00bytes\xff")
        assert pinned.read_bytes("/tmp/x") == b"\x00bytes\xff"
        assert pinned.exec(["cat", "/tmp/x"]).stdout_bytes == b"\x00bytes\xff"
        s = pinned.session("named")
        assert s.run("cd /tmp && pwd").output == "/tmp\n"
        # streamed output comes through the node host as it is made, not at the end
        seen: list[tuple[float, bytes]] = []
        streamed = pinned.run("for i in 1 2 3; do echo line$i; sleep 0.3; done",
                              on_output=lambda chunk: seen.append((time.monotonic(), chunk)))
        done = time.monotonic()
        assert b"".join(c for _, c in seen) == b"line1\nline2\nline3\n" and streamed.exit_code == 0
        assert done - seen[0][0] > 0.4, seen     # the first line came before the last was made
        # a fork's children land on their source's node, files copied
        children = pinned.fork(2)
        ids += [c.id for c in children]
        assert nodes()[B]["sandboxes"]["running"] == 5
        assert [c.read_bytes("/tmp/x") for c in children] == [b"\x00bytes\xff"] * 2
        assert children[0].run("echo child").output == "child\n"
        for child in children:
            child.remove()
        pinned.stop()
        pinned.start()
        assert pinned.run("echo again").output == "again\n"
        # the agent's connection through the host's relay survives a pause, and a reset's new agent
        pinned.pause()
        pinned.resume()
        assert pinned.run("echo awake").output == "awake\n"
        pinned.reset()
        assert pinned.run("cat /tmp/x 2>/dev/null || echo pristine").output == "pristine\n"

        # what no node can satisfy is a clear error naming the missing resource or label
        with pytest.raises(CapacityExceeded, match="no live node has the labels tumbler-host=c"):
            Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": "c"})
        with pytest.raises(CapacityExceeded, match="short of memory"):
            Sandbox(IMAGE, client=client, memory="900m")

        for sb in [*boxes, pinned]:
            sb.remove()
        assert all(not n["sandboxes"] for n in nodes().values())
        if not _have_rock():   # ROCK's unmodified SDK: a start, a command, a delete
            out = run_client("start_only", srv.url, srv.token)
            ids.append(out.get("sandbox_id") or "")
            assert out["start"] is None and out["exec_list"]["stdout"] == "auth-ok\n", out
            assert out["delete"] is None


@pytest.mark.slow
def test_node_loss_and_return_through_the_server(tmp_path):
    """A node killed: its sandboxes turn error naming it within seconds, calls to them fail at
    once, placements go to the node left; the node back: a host there again, what was left removed."""
    ids: list[str] = []
    with cluster_server(tmp_path, ids) as (lc, srv, client, nodes):
        on_b = Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": B})
        ids.append(on_b.id)
        # a node that dies: its sandboxes turn error (lost) naming it, calls fail at once
        # with a clear error, placements go to the nodes left
        on_a = Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": A})
        ids.append(on_a.id)
        assert on_a.run("echo up").output == "up\n"   # its agent reached (the host's relay)
        failed: list[BaseException] = []

        def in_flight():
            try:
                on_a.run("sleep 600", timeout=900)
            except BaseException as exc:   # noqa: BLE001 - what the command ended with
                failed.append(exc)
        waiting = threading.Thread(target=in_flight, daemon=True)
        waiting.start()
        time.sleep(0.5)
        lc.kill(A)
        waiting.join(60)                   # a command in flight fails, it does not hang
        assert not waiting.is_alive() and len(failed) == 1, failed
        assert isinstance(failed[0], TumblerError) and "lost" in str(failed[0]), failed
        deadline = time.monotonic() + 60
        while (rec := client.send(core.get(on_a.id))).state.value != "error":
            assert time.monotonic() < deadline, rec
            time.sleep(0.5)
        assert "node host" in rec.error and f"/{A}" in rec.error and "lost" in rec.error
        assert nodes()[A]["state"] == "lost"
        with pytest.raises(TumblerError, match="lost"):
            on_a.run("echo hi")
        assert on_b.run("echo still").output == "still\n"
        late = Sandbox(IMAGE, client=client, memory="128m")
        ids.append(late.id)
        assert nodes()[B]["sandboxes"]["running"] == 2   # on_b and late
        # the node comes back: the server starts a host there, which removes what was left
        lc.add(A)
        while nodes()[A]["state"] != "alive":
            assert time.monotonic() < deadline + 60, nodes()
            time.sleep(0.5)
        back = Sandbox(IMAGE, client=client, memory="128m", labels={"tumbler.node/tumbler-host": A})
        ids.append(back.id)
        assert back.run("echo back").output == "back\n"
        for sb in [on_b, on_a, late, back]:
            sb.remove()
        assert all(not n["sandboxes"] for n in nodes().values())


def _held_on_hosts(host_ids: set[str]) -> set[str]:
    """The sandboxes the node hosts of this run hold, read off this machine's runtime (every
    node of the local cluster shares it): each carries its host's id."""
    return {i.id for i in ProcessRuntime().list() if i.spec.labels.get(HOST_LABEL) in host_ids}


@pytest.mark.slow
def test_head_sigkill_and_restart_reconciles(tmp_path):
    """The server SIGKILLed with sandboxes on both nodes, creates in flight and a sandbox on a
    host that no record names; started again on the same registry it takes the node hosts over
    (detached actors): the sandboxes run on, shell state and all, the one no record names is
    removed, and the hosts hold exactly the sandboxes the registry has running."""
    ids: list[str] = []
    with cluster_server(tmp_path, ids) as (lc, srv, client, nodes):
        host_ids = {n["name"] for n in nodes().values()}
        boxes = [Sandbox(IMAGE, client=client, memory="64m") for _ in range(4)]
        ids += [sb.id for sb in boxes]
        assert sorted(n["sandboxes"].get("running", 0) for n in nodes().values()) == [2, 2]
        for sb in boxes:
            sb.run(f"export KEEP={sb.id}")
        # a sandbox on a host that the server never recorded (made past it, through Ray)
        host = ray.get_actor(actor_name(f"{socket.gethostname()}/{A}"), namespace="tumbler")
        stray = "5712a7000000"
        ids.append(stray)
        made = ray.get(host.runtime_calls.remote([(stray, ("create", (SandboxSpec(image=IMAGE), stray)))]),
                       timeout=120)
        assert not isinstance(made[0], TumblerError), made
        assert stray in _held_on_hosts(host_ids)

        # creates in flight when the server dies
        answered: list[str] = []

        def create() -> None:
            try:
                answered.append(Sandbox(IMAGE, client=client, memory="64m").id)
            except Exception:   # the server died under it: the restart decides what it was
                pass
        burst = [threading.Thread(target=create) for _ in range(4)]
        for t in burst:
            t.start()
        deadline = time.monotonic() + 120
        while not answered and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.kill()                                  # SIGKILL: no shutdown code runs
        for t in burst:
            t.join(120)
        ids += answered
        assert stray in _held_on_hosts(host_ids)    # the hosts outlived their driver

        srv.start()                                 # same registry, same port
        records = {r.id: r for r in client.list()}
        ids += list(records)
        running = {sid for sid, r in records.items() if r.state.value == "running"}
        # nothing forgotten runs, nothing running is forgotten: the hosts hold what the registry
        # has in a state that holds a sandbox (a create cut between its make and its start is
        # `created`), the rest is `error` (never made: the server died before asking)
        held = {sid for sid, r in records.items() if r.state.value != "error"}
        assert _held_on_hosts(host_ids) == held
        assert stray not in records
        assert {sb.id for sb in boxes} | set(answered) <= running
        for sb in boxes:                            # the same sandboxes, their shells untouched
            assert sb.run("echo $KEEP").output == f"{sb.id}\n"
        assert {k: v["state"] for k, v in nodes().items()} == {A: "alive", B: "alive"}
        assert sum(sum(n["sandboxes"].values()) for n in nodes().values()) == len(held)
        for sid in records:
            client.send(core.remove(sid))
        assert _held_on_hosts(host_ids) == set()


@pytest.mark.slow
@needs_rock
def test_the_rock_sdk_against_a_cluster_mode_server(tmp_path, monkeypatch):
    """ROCK's real, unmodified SDK (rl-rock, the peers' venv) through a cluster-mode server:
    start, commands, sessions, nohup, files, upload, stop and delete, and a caller-chosen id
    attached to, with the sandboxes on the node hosts (the default run's test above does a
    start, a command and a delete with it)."""
    monkeypatch.setenv("TUMBLER_ROCK_DEFAULT_IMAGE", IMAGE)   # "python:3.11" runs the test image
    ids: list[str] = []
    with cluster_server(tmp_path, ids) as (lc, srv, client, nodes):
        out = run_client("full", srv.url, srv.token)
        ids.append(out.get("sandbox_id") or "")
        assert out["start"] is None and out["is_alive"]["is_alive"] is True, out
        assert out["status"]["state"] == "running"
        assert out["exec_list"] == {"stdout": "exec-ok\n", "stderr": "", "exit_code": 0}
        assert out["exec_string"] == {"stdout": "hi\n", "stderr": "err\n", "exit_code": 0}
        assert out["arun_echo"]["output"] == "42 /tmp s1" and out["arun_multiline"]["output"] == "a\nb"
        assert out["nohup_ok"]["output"] == "done-nohup" and out["nohup_head"]["output"] == "1\n2\n3"
        assert out["read_file"]["content"] == "hello\nworld\n"
        assert out["upload_sha"]["stdout"].split()[0] == out["upload_sha_expected"]
        assert out["status_after_stop"]["state"] == "stopped"
        assert out["delete"] is None and out["delete_again"] is None
        chosen = run_client("chosen_id", srv.url, srv.token)
        ids.append(chosen.get("sandbox_id") or "")
        assert chosen["start"] is None and chosen["exec_attached"]["stdout"] == "attached\n", chosen
        assert chosen["delete"] is None
        assert all(not n["sandboxes"] for n in nodes().values())


@pytest.mark.slow
def test_elastic_pools_follow_the_nodes(tmp_path):
    """A pool of 2 per node spread over the nodes grows onto a node that joins and shrinks off
    one that is lost; a fixed-size pool's sandboxes on the lost node are made again elsewhere;
    the lost node back, the per-node pool grows onto it again."""
    ids: list[str] = []
    C = f"c{os.getpid()}"
    with cluster_server(tmp_path, ids) as (lc, srv, client, nodes):
        name = {label: n["name"] for label, n in nodes().items()}

        def pool(which: str):
            return next(p for p in client.pools() if p.name == which)

        def spread(which: str) -> dict[str, int]:
            return {label: pool(which).nodes.get(host, 0) for label, host in name.items()}

        made = client.set_pool("each", image=IMAGE, per_node=2, memory="64m")
        assert (made.size, made.per_node) == (4, 2)
        client.set_pool("fixed", 2, image=IMAGE, memory="96m")
        wait_for(lambda: pool("each").ready == 4 and spread("each") == {A: 2, B: 2}, 120,
                 "the per-node pool to fill, 2 on each node")
        wait_for(lambda: pool("fixed").ready == 2, 120, "the fixed pool to fill")

        lc.add(C)                                   # a node joins
        wait_for(lambda: C in nodes(), 120, "the server to start a host on the new node")
        name[C] = nodes()[C]["name"]
        wait_for(lambda: pool("each").size == 6 and spread("each") == {A: 2, B: 2, C: 2}, 120,
                 "the per-node pool to grow onto the new node")

        fixed_on_a = spread("fixed")[A]
        lc.kill(A)                                  # a node is lost
        wait_for(lambda: nodes()[A]["state"] == "lost", 60, "node A to be found lost")
        wait_for(lambda: pool("each").size == 4 and spread("each") == {A: 0, B: 2, C: 2}, 60,
                 "the per-node pool to shrink off the lost node")
        wait_for(lambda: pool("fixed").ready == 2 and spread("fixed")[A] == 0, 120,
                 f"the fixed pool to make its {fixed_on_a} sandboxes of node A again elsewhere")
        sb = Sandbox(IMAGE, client=client, memory="64m")   # a handover, from a live node
        ids.append(sb.id)
        assert sb.run("echo warm").output == "warm\n"
        sb.remove()

        lc.add(A)                                   # back: a new host reclaims what was left
        wait_for(lambda: nodes()[A]["state"] == "alive", 120, "node A's host again")
        wait_for(lambda: pool("each").size == 6 and spread("each") == {A: 2, B: 2, C: 2}, 120,
                 "the per-node pool to grow onto node A again")
        client.remove_pool("each")
        client.remove_pool("fixed")
        wait_for(lambda: all(not n["sandboxes"] for n in nodes().values()), 60, "the pools to empty")


@pytest.mark.slow
def test_images_reach_nodes_with_a_store_of_their_own(tmp_path):
    """Each node with its own Tumbler home (an empty image store): the first sandbox on a node
    gets the test image copied there from the server's store, checked by its sha256; the next
    ones on that node cost no copy."""
    for path in (tmp_path, *tmp_path.parents):   # a sandbox's shifted root must reach its rootfs
        if path == Path("/tmp") or path == path.parent:
            break
        path.chmod(path.stat().st_mode | 0o111)
    homes = tmp_path / "nodes"
    with local_cluster([A, B]) as lc:
        srv = ServerProcess(tmp_path, ray=lc.cluster.address, node_memory_bytes=1 << 30,
                            cluster={"home": str(homes / "{name}")}, log_level="info")
        srv.start()
        client = srv.client()
        try:
            boxes = [Sandbox(IMAGE, client=client, memory="64m") for _ in range(4)]   # 2 a node
            for sb in boxes:
                assert "Debian" in sb.run("head -1 /etc/os-release").output
            head = ImageStore().meta(IMAGE)["digest"]
            for name in (A, B):
                node = ImageStore(Paths(home=homes / name, run=tmp_path / "run"))
                assert node.meta(IMAGE)["digest"] == head
            assert all(n.images == {IMAGE: head} for n in client.nodes())   # GET /v1/nodes
            log = (tmp_path / "server.log").read_text()
            assert log.count(f"copied image '{IMAGE}'") == 2, log[-2000:]   # once per node
            for sb in boxes:
                sb.remove()
        finally:
            assert srv.terminate(120) in (0, -15)
    reap_zombies()
    for name in (A, B):
        runtime = ProcessRuntime(Paths(home=homes / name, run=Paths.from_env().run))
        for sb in boxes:
            assert leftovers(runtime, sb.id) == []


@pytest.mark.slow
def test_idle_nodes_are_released_and_taken_back_through_the_server(tmp_path):
    """With autoscaling on, nodes idle for idle_release_s show `released` in GET /v1/nodes and
    `tumbler node ls`; a new sandbox takes one back; a per-node pool then counts the live node
    only and keeps it; once the pool is gone, it is released again."""
    ids: list[str] = []
    settings = {"autoscale_max_nodes": 3, "idle_release_s": 1.0}
    with cluster_server(tmp_path, ids, cluster=settings) as (lc, srv, client, nodes):
        def states() -> list[str]:
            return sorted(n["state"] for n in nodes().values())

        wait_for(lambda: states() == ["released", "released"], 60, "both idle nodes to be released")
        assert node_ls(srv).count("released") == 2
        srv.kill()                                   # SIGKILL: the restart reads Ray's KV
        srv.start()
        assert states() == ["released", "released"]  # no host started on an idle node
        sb = Sandbox(IMAGE, client=client, memory="128m")   # no live host: one is taken back
        ids.append(sb.id)
        assert sb.run("echo back").output == "back\n"
        assert states() == ["alive", "released"]
        assert client.set_pool("each", image=IMAGE, per_node=1, memory="64m").size == 1
        sb.remove()
        wait_for(lambda: client.pools()[0].ready == 1, 120, "the per-node pool to fill")
        time.sleep(3)   # past idle_release_s, a few reaper passes: the pool keeps its node
        assert states() == ["alive", "released"]
        client.remove_pool("each")
        wait_for(lambda: states() == ["released", "released"], 60, "the node to be released again")
