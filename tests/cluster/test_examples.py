"""The example deployments in examples/cluster/ are what their tools accept: the Ray cluster
launcher's YAML passes Ray's own schema, server.yaml is a valid `tumbler serve --config`, and
the KubeRay RayCluster gives each sandbox pod one tumbler_host."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="tumbler[cluster] (ray) is not installed")

from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

from tumbler.server.config import ServerConfig  # noqa: E402

EXAMPLES = Path(__file__).parents[2] / "examples" / "cluster"


def test_the_ray_cluster_yaml_passes_rays_schema():
    config = prepare_config(yaml.safe_load((EXAMPLES / "ray-cluster.yaml").read_text()))
    validate_config(config)
    types = config["available_node_types"]
    assert "tumbler_host" not in types["head"]["resources"]            # no sandboxes on the head
    node = types["sandbox_node"]["resources"]
    assert node["tumbler_host"] == 1 and node["tumbler_memory"] > 1 << 30
    assert any("tumbler serve --config" in c for c in config["head_start_ray_commands"])


def test_the_server_yaml_is_a_server_configuration():
    config = ServerConfig.from_file(EXAMPLES / "server.yaml", tokens=["t"])
    assert config.ray == "auto" and config.pools[0].per_node == 8
    assert config.cluster["autoscale_max_nodes"] == 20


def test_the_kuberay_cluster_gives_each_sandbox_pod_one_host():
    cluster, service = yaml.safe_load_all((EXAMPLES / "kuberay-raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and service["kind"] == "Service"
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    [group] = cluster["spec"]["workerGroupSpecs"]
    resources = json.loads(json.loads(group["rayStartParams"]["resources"]))
    assert resources["tumbler_host"] == 1
    [container] = group["template"]["spec"]["containers"]
    assert container["securityContext"]["privileged"] is True
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "tumbler serve --config" in " ".join(head["args"])
