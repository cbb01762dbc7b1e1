"""downwardAPI volumes follow the pod's metadata, as kubelet's do: a container sees an
annotation added after it started (the cancel request travels this way)."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import container, pod_manifest, pod_phase, wait_for, wait_running

pytestmark = pytest.mark.cluster

# Exits 0 once the annotation shows up in the file, 1 if it never does (no wall-clock assert:
# the pod's outcome says which).
SCRIPT = (
    "for i in $(seq 1 600); do "
    "grep -q '^example.dev/late=\"yes\"$' /podinfo/annotations && exit 0; sleep 0.1; done; exit 1"
)


def test_an_annotation_added_later_reaches_the_container(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    pod = pod_manifest(
        "downward",
        [container("main", SCRIPT, volumeMounts=[{"name": "podinfo", "mountPath": "/podinfo"}])],
        volumes=[{
            "name": "podinfo",
            "downwardAPI": {"items": [
                {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            ]},
        }],
    )  # fmt: skip
    pod["metadata"]["annotations"] = {"example.dev/early": "1"}
    core.create_namespaced_pod(k8s_namespace, pod)
    wait_running(core, k8s_namespace, "downward")
    core.patch_namespaced_pod(
        "downward", k8s_namespace, {"metadata": {"annotations": {"example.dev/late": "yes"}}}
    )
    phase = wait_for(
        "the pod to end",
        lambda: (p := pod_phase(core, k8s_namespace, "downward")) in ("Succeeded", "Failed") and p,
        timeout=90,
    )
    assert phase == "Succeeded"
