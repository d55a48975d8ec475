"""Warm pools through the server: configured at start, create as a handover, resize over the
API, and pooled sandboxes of a killed server reclaimed at its next start."""
from __future__ import annotations


from checks import wait_for
from server_process import TOKEN, ServerProcess, leftovers_after, reap, sweep
from tumbler.sdk import core
from tumbler.server.pools import POOL_LABEL


def pooled_ids(runtime, pool: str = "warm") -> set[str]:
    """This test's pool's sandboxes (another server on the machine may keep a pool too)."""
    return {i.id for i in runtime.list() if i.spec.labels.get(POOL_LABEL) == pool}


def ready(client, name: str) -> int:
    return next((p.ready for p in client.pools() if p.name == name), 0)


def test_create_is_a_handover_from_the_pool(runtime, tmp_path):
    srv = ServerProcess(tmp_path, pools=[{"name": "warm", "size": 2, "image": "debian"}]).start()
    client = srv.client()
    try:
        wait_for(lambda: ready(client, "warm") == 2, what="the pool to fill")
        waiting = pooled_ids(runtime)
        sb = client.create("debian", labels={"job": "a"})
        assert sb.id in waiting  # handed over, not made cold
        # With a spare bash (not a session yet), which the first command's default session takes.
        assert sb.sessions() == []
        spare = [p.pid for p in sb.processes() if p.cmd.split()[0].endswith("bash")]
        assert len(spare) == 1
        assert sb.run("echo from the pool $$").output == f"from the pool {spare[0]}\n"
        assert sb.run("pwd").output == "/root\n"   # the spec's cwd, as a cold one's
        assert sb.refresh().labels == {"job": "a"}
        pool = next(p for p in client.pools() if p.name == "warm")
        assert pool.handed_out == 1
        wait_for(lambda: ready(client, "warm") == 2, what="the pool to refill")
        other = client.create("debian", memory="256m")  # another spec: made cold
        assert other.id not in waiting
        client.set_pool("warm", 0)
        wait_for(lambda: ready(client, "warm") == 0, what="the pool to empty")
        client.set_pool("small", 1, memory="256m")
        wait_for(lambda: ready(client, "small") == 1, what="a pool made over the API")
        client.remove_pool("small")
        per_node = client.set_pool("each", per_node=1, memory="256m")   # one node here: 1
        assert (per_node.size, per_node.per_node) == (1, 1)
        wait_for(lambda: ready(client, "each") == 1, what="a per-node pool to fill")
        client.remove_pool("each")
    finally:
        try:
            sweep(client, runtime, client.made)
        finally:  # a failed check must not leave the server running
            client.close()
            srv.terminate()
    assert pooled_ids(runtime) & waiting == set()


def test_pooled_sandboxes_of_a_killed_server_are_reclaimed(runtime, tmp_path):
    srv = ServerProcess(tmp_path, pools=[{"name": "warm", "size": 2}]).start()
    client = srv.client()
    try:
        wait_for(lambda: ready(client, "warm") == 2, what="the pool to fill")
        kept = client.create("debian")
        # Let the refill finish: a sandbox caught half-started has no init pid to collect yet.
        wait_for(lambda: ready(client, "warm") == 2, what="the pool to refill")
        waiting = pooled_ids(runtime) - {kept.id}
        pids = [runtime.init_pid(sid) for sid in waiting]
        kept_pid = runtime.init_pid(kept.id)
    except BaseException:
        client.close()
        srv.terminate()
        raise
    srv.kill()
    client.close()
    srv = ServerProcess(tmp_path, port=srv.config["port"]).start()
    client = srv.client(TOKEN)
    try:
        for pid in pids:
            if pid:
                reap(pid)
        for sid in waiting:
            assert leftovers_after(runtime, sid) == []
        assert kept.id in {s.id for s in client.list()}  # handed out: it is a client's now
        client.send(core.remove(kept.id))
        reap(kept_pid)  # its init was re-parented to this test process when the server died
    finally:
        try:
            sweep(client, runtime, [kept.id, *waiting])
        finally:
            client.close()
            srv.terminate()
