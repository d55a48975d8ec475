"""ClusterConfig: where node hosts go and how long the client waits for them."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Backend = Literal["process", "docker"]


class ClusterConfig(BaseModel):
    """How a `ClusterClient` places node hosts and bounds its waits. Defaults fit a laptop."""

    model_config = ConfigDict(extra="forbid")

    resource: str = Field(default="tumbler_host", description=(
        "custom Ray resource that marks a node for a node host; each host takes 1 unit, so a "
        "node offering 1 gets exactly one (`ray start --resources '{\"tumbler_host\": 1}'`)"))
    name_label: str = Field(default="tumbler-host", description=(
        "Ray node label whose value names the host on its machine; with the machine's hostname "
        "it makes the host id, which a restarted host finds its predecessor's sandboxes by"))
    default_name: str = Field(default="default", description="the name when a node has no such label")
    namespace: str = Field(default="tumbler", description=(
        "Ray namespace of the node host actors, each named `tumbler-node-host:<host id>`: a "
        "server that restarts finds its hosts there. One server per namespace"))
    detached: bool = Field(default=False, description=(
        "node hosts outlive the driver that started them (Ray's detached actors), so a server "
        "SIGKILLed and restarted takes them over with their sandboxes (the server sets it)"))
    owner: str | None = Field(default=None, description=(
        "who the hosts serve (the server's registry URL): a driver with another owner may not "
        "take them over"))
    autoscale_max_nodes: int = Field(default=0, ge=0, description=(
        "when a sandbox (or a pool's) finds no room on the live nodes, ask Ray's autoscaler "
        "for one node more that offers the resource, up to this many in all "
        "(`ray.autoscaler.sdk.request_resources`); 0: never ask"))
    idle_release_s: float = Field(default=300.0, ge=0, description=(
        "with autoscale_max_nodes set: seconds a node may hold no sandbox and no per-node "
        "pool's target before its node host is released (ended, the standing request lowered "
        "to the live hosts), so that Ray's autoscaler can remove the idle node; placement takes "
        "a released node back before it asks for a new one. 0: never release"))
    home: str | None = Field(default=None, description=(
        "TUMBLER_HOME on the nodes (images, sandbox dirs); `{name}` in it is the host's name "
        "(several nodes on one machine, each its own store); None: the node's own environment"))
    copy_images: bool = Field(default=True, description=(
        "before a sandbox is made on a node, copy the image layers the node lacks from the "
        "server's store, verified by sha256 (cluster/images.py); off: each node's store decides"))
    image_timeout_s: float = Field(default=900.0, gt=0, description=(
        "seconds for one image layer to be copied to a node"))
    run: str | None = Field(default=None, description="TUMBLER_RUN on the nodes; None: as above")
    backend: Backend = Field(default="process", description=(
        "how the node hosts isolate sandboxes: process (runc) or docker (a Docker-API engine "
        "on each node, Docker or Podman; its images are the engine's, none are copied)"))
    engine: str | None = Field(default=None, description=(
        "docker nodes: the engine's API URL on the node; None: the node's DOCKER_HOST, else "
        "/var/run/docker.sock, else Tumbler's Podman socket"))
    node_backends: dict[str, Backend] = Field(default_factory=dict, description=(
        "per node: a host's name (its `name_label` value) -> its backend, instead of `backend`"))
    start_concurrency: int = Field(default=4, ge=1, le=256, description=(
        "sandboxes one host starts or removes at once (each start costs runc and a python)"))
    start_timeout_s: float = Field(default=120.0, gt=0, description=(
        "seconds for a node host to come up, its predecessor's sandboxes reclaimed"))
    create_timeout_s: float = Field(default=300.0, gt=0, description="seconds for one create batch")
    probe_timeout_s: float = Field(default=5.0, gt=0, description=(
        "seconds to wait for the raylet of a node whose host was lost, before placing a new host there"))
    op_timeout_s: float = Field(default=120.0, gt=0, description=(
        "seconds for a remove or reset batch, and for a node host to answer `info`"))
    direct_agents: bool = Field(default=True, description=(
        "the server's cluster mode calls a sandbox's agent over a TCP connection to its node "
        "host's relay (one per sandbox, opened with the host's secret), not one Ray actor call "
        "per op: a command costs about what it does on a single node. Off: every op through Ray"))
    reply_grace_s: float = Field(default=30.0, ge=0, description=(
        "seconds on top of a command's own timeout before the client gives up on the host"))

    def backend_of(self, host_id: str) -> Backend:
        """The backend of node host `host_id` (machine/name)."""
        return self.node_backends.get(host_id.partition("/")[2], self.backend)
