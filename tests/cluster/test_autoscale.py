"""Pool demand scales a Ray cluster: a sandbox that finds no room on the live nodes makes the
server's ClusterRuntime ask Ray's autoscaler for one node more (ClusterConfig.autoscale_max_nodes),
which is what Ray's `request_resources` stores for the autoscaler to act on. The local cluster
here has no autoscaler process, so the test reads the request where Ray keeps it."""
from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

from ray.autoscaler._private.constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL  # noqa: E402
from ray.autoscaler.v2.utils import is_autoscaler_v2  # noqa: E402
from ray.experimental.internal_kv import _internal_kv_get  # noqa: E402

from checks import IMAGE  # noqa: E402
from raycluster import local_cluster, reap_zombies  # noqa: E402
from tumbler.cluster import ClusterConfig  # noqa: E402
from tumbler.cluster.placement import Budget  # noqa: E402
from tumbler.cluster.runtime import ClusterRuntime  # noqa: E402
from tumbler.errors import CapacityExceeded  # noqa: E402
from tumbler.runtime.spec import Limits, SandboxSpec  # noqa: E402

A = f"s{os.getpid()}"


def _asked() -> list[dict] | None:
    raw = _internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)
    return json.loads(raw) if raw else None


def test_no_room_asks_the_autoscaler_for_a_node():
    with local_cluster([A]):
        config = ClusterConfig(autoscale_max_nodes=2, namespace=f"autoscale-{os.getpid()}")
        rt = ClusterRuntime(Budget(256 << 20, 1 << 16, 64.0), config=config)
        try:
            big = SandboxSpec(image=IMAGE, limits=Limits(memory=512 << 20))
            with pytest.raises(CapacityExceeded, match=r"short of memory.*Asked Ray's autoscaler "
                                                       r"for 2 nodes with tumbler_host"):
                rt.create(big)
            assert not is_autoscaler_v2()   # v2 would take it over a GCS call instead
            assert _asked() == [{"tumbler_host": 1}] * 2
            # a label no node has is not a matter of room: nothing is asked for it
            rt._asked = 0
            odd = SandboxSpec(image=IMAGE, labels={"tumbler.node/zone": "mars"})
            with pytest.raises(CapacityExceeded) as err:
                rt.create(odd)
            assert "autoscaler" not in err.value.message
            # at the cap, it says what it is short of and asks for nothing more
            rt.config = config.model_copy(update={"autoscale_max_nodes": 1})
            with pytest.raises(CapacityExceeded) as err:
                rt.create(big)
            assert "autoscaler" not in err.value.message
        finally:
            rt.close()
            reap_zombies()
