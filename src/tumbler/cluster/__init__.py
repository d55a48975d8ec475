"""Sandboxes across the machines of a Ray cluster: a node host actor per machine, node loss.

    config.py     ClusterConfig (where node hosts go, their timeouts)
    nodehost.py   NodeHost: one machine's sandboxes behind batched async calls (the Ray actor);
                  its sandboxes carry the host's id, and a new host reclaims a dead one's
    client.py     ClusterClient: one NodeHost per node (named, in a namespace; detached for
                  the server, which takes them over when it restarts), calls routed per
                  sandbox, a dead node's calls answered with NodeLost
    placement.py  where a new sandbox goes: budgets, node labels, spread or pack, pools spread
    runtime.py    ClusterRuntime: the server's runtime in cluster mode (`tumbler serve --ray`)
    images.py     images copied from the server's store to the nodes, by sha256 digest

May import runtime, agent (client side), errors, models, config; never server. Ray is imported
by client.py and runtime.py only (`tumbler[cluster]`); NodeHost itself runs without it.
"""
from tumbler.cluster.config import ClusterConfig
from tumbler.cluster.nodehost import HOST_LABEL, HostInfo, NodeHost, host_id_for

__all__ = ["ClusterClient", "ClusterConfig", "HOST_LABEL", "HostInfo", "NodeHost", "host_id_for"]


def __getattr__(name: str):
    # The client needs ray; importing the package must not.
    if name == "ClusterClient":
        from tumbler.cluster.client import ClusterClient
        return ClusterClient
    raise AttributeError(name)
