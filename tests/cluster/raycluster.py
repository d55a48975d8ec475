"""A Ray cluster of several nodes on this one machine, for the cluster tests and nothing else.

    with local_cluster(["a", "b"]) as lc:      # head + a node per name, driver connected
        lc.kill("a")                            # SIGKILL every process of node a, no grace
        lc.add("a")                             # a fresh node (new Ray node id) named a again

    with autoscaling_cluster("c", idle_timeout_minutes=0.1):   # Ray's own autoscaler adds and
        ...                                                    # removes node c (0 or 1 of it)

Each named node offers 1 unit of `RESOURCE` and the node label `LABEL` = its name, which is how
`ClusterClient` places one NodeHost per node and names it. Every node sits on 127.0.0.1 (tests
send traffic to loopback only) and Ray's usage stats are off. The test process becomes a child
subreaper first, so whatever a killed node leaves (its workers, their sandboxes' inits) is
reparented to it rather than to pid 1, which here reaps nobody; `reap_zombies` collects them,
and leaving the block shuts every node down, then kills and reaps whatever it started
that still runs (`killed_at_exit` names them).
"""
from __future__ import annotations

import ctypes
import json
import os
import socket
import tempfile
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Ray resolves "this node" to the machine's outward address unless this says otherwise.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import ray  # noqa: E402
from ray._common.utils import get_ray_address_file  # noqa: E402
from ray._private import ray_constants  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = False   # read at each call; the env above covers our children
RESOURCE = "tumbler_host"
LABEL = "tumbler-host"
NODE_IP = "127.0.0.1"
GRACE_S = 1.0               # for the cluster's processes to exit on their own
EXIT_WAIT_S = 10.0
PR_SET_CHILD_SUBREAPER = 36


class LocalCluster:
    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.nodes: dict[str, object] = {}
        self.killed_at_exit: list[str] = []     # Ray processes still running after shutdown

    def add(self, name: str) -> None:
        self.nodes[name] = self.cluster.add_node(
            num_cpus=1, resources={RESOURCE: 1}, labels={LABEL: name}, node_ip_address=NODE_IP)

    def kill(self, name: str) -> None:
        """Kill node `name` at once: raylet, its workers and their children, no grace."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)


@contextmanager
def local_cluster(names: list[str]) -> Iterator[LocalCluster]:
    _become_subreaper()
    before = set(_children())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": NODE_IP})
    session_dir = cluster.head_node.get_session_dir_path()
    address = cluster.address
    lc = LocalCluster(cluster)
    try:
        for name in names:
            lc.add(name)
        ray.init(address=address, log_to_driver=False)
        yield lc
    finally:
        ray.shutdown()
        for node in [*cluster.worker_nodes, cluster.head_node]:
            if node is not None:
                try:
                    cluster.remove_node(node, allow_graceful=False)
                except AssertionError:   # "zombie processes left over": reaped below
                    pass
        lc.killed_at_exit = _finish_children(before)
        shutil.rmtree(session_dir, ignore_errors=True)
        _forget(address, session_dir)


@contextmanager
def autoscaling_cluster(name: str, idle_timeout_minutes: float = 0.1) -> Iterator[Cluster]:
    """A head (no `RESOURCE`) running Ray's own autoscaler (its monitor, v1) over Ray's fake
    multi-node provider, whose "machines" are raylets started on this one: one node type that
    offers `RESOURCE` with `LABEL` = `name`, 0 to 1 of it, removed after `idle_timeout_minutes`
    idle. Driver connected; everything it started is killed and reaped on leaving."""
    env = {"RAY_FAKE_CLUSTER": "1",               # the provider refuses to run without it
           "AUTOSCALER_UPDATE_INTERVAL_S": "1"}   # the monitor's loop (5 s by default)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)                        # the head's monitor inherits them
    with socket.socket() as s:
        s.bind((NODE_IP, 0))
        port = s.getsockname()[1]
    config = {
        "cluster_name": f"tumbler-{name}", "max_workers": 1, "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": f"{NODE_IP}:{port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "sandboxes": {"resources": {"CPU": 1, RESOURCE: 1}, "labels": {LABEL: name},
                          "node_config": {}, "min_workers": 0, "max_workers": 1}},
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                               "worker_setup_commands", "head_start_ray_commands",
                               "worker_start_ray_commands", "cluster_synced_files",
                               "rsync_exclude", "rsync_filter")},
        "file_mounts_sync_continuously": False}
    _become_subreaper()
    before = set(_children())
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="tumbler-autoscaler-") as fh:
        json.dump(config, fh)
        fh.flush()
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "node_ip_address": NODE_IP,
            "gcs_server_port": port, "autoscaling_config": fh.name})
        session_dir = cluster.head_node.get_session_dir_path()
        try:
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            try:   # the monitor goes with the head; the nodes it launched are reaped below
                cluster.remove_node(cluster.head_node, allow_graceful=False)
            except AssertionError:
                pass
            _finish_children(before)
            shutil.rmtree(session_dir, ignore_errors=True)
            _forget(cluster.address, session_dir)
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def reap_zombies(before: set[int] | None = None) -> int:
    """Collect exited children (not in `before`) -> how many."""
    reaped = 0
    for pid, state in _children().items():
        if state == "Z" and (before is None or pid not in before):
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
            except ChildProcessError:
                pass
    return reaped


def _finish_children(before: set[int]) -> list[str]:
    """Kill and reap every child that came after `before`: what is left of the cluster once
    its nodes are removed (Ray's per-node agents outlive a killed raylet by half a minute).
    Returns what was still running; raises if anything outlives EXIT_WAIT_S."""
    time.sleep(GRACE_S)
    reap_zombies(before)
    running = [f"{pid} {_comm(pid)}" for pid in _children() if pid not in before]
    deadline = time.monotonic() + EXIT_WAIT_S
    while True:
        reap_zombies(before)
        rest = [pid for pid in _children() if pid not in before]
        if not rest:
            return running
        if time.monotonic() > deadline:
            raise AssertionError(f"processes outlived the cluster by {EXIT_WAIT_S} s: "
                                 f"{[f'{pid} {_comm(pid)}' for pid in rest]}")
        for pid in rest:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _forget(address: str, session_dir: str) -> None:
    """Ray notes the newest cluster's address (for a bare `ray.init()` to join) and links its
    session as `session_latest`: not ours to leave once the cluster is gone."""
    note = Path(get_ray_address_file(None))
    latest = Path(session_dir).parent / "session_latest"
    try:
        if note.read_text().strip() == address:
            note.unlink()
    except OSError:
        pass
    try:
        if os.readlink(latest) == session_dir:
            latest.unlink()
    except OSError:
        pass


def _children() -> dict[int, str]:
    """This process's children -> their state letter (R, S, Z...)."""
    me = os.getpid()
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out[int(entry)] = fields[0]
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return "?"


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
