"""The node agent registers a CPU pool node and a GPU pool node."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.cluster import K8sCluster

pytestmark = pytest.mark.cluster


def test_get_nodes_lists_both_pools_with_gpu_capacity_and_taint(k8s_cluster: K8sCluster) -> None:
    nodes = json.loads(k8s_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_pool = {n["metadata"]["labels"].get("arkor-ops.dev/pool"): n for n in nodes}
    assert {"cpu", "gpu"} <= set(by_pool)

    gpu = by_pool["gpu"]
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.product"].startswith("NVIDIA-")
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in gpu["spec"][
        "taints"
    ]
    cpu = by_pool["cpu"]
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert not cpu["spec"].get("taints")
    for node in (cpu, gpu):
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"

    table = k8s_cluster.kubectl("get", "nodes", "-L", "arkor-ops.dev/pool").stdout
    assert "arkor-cpu-0" in table
    assert "arkor-gpu-0" in table
    assert "NotReady" not in table


def test_node_leases_are_renewed(k8s_cluster: K8sCluster) -> None:
    leases = json.loads(
        k8s_cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "json").stdout
    )["items"]
    holders = {lease["spec"]["holderIdentity"] for lease in leases}
    assert {"arkor-cpu-0", "arkor-gpu-0"} <= holders
