"""GPU requests land on the GPU pool only when the taint is tolerated."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import (
    GPU_TOLERATION,
    container,
    job_manifest,
    job_pods,
    pod_manifest,
    read_pod,
    wait_for,
)

pytestmark = pytest.mark.cluster

GPU_LIMITS = {"limits": {"nvidia.com/gpu": "1"}}


def test_gpu_job_with_toleration_runs_on_gpu_node_and_completes(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    api = k8s_cluster.api_client()
    batch = client.BatchV1Api(api)
    core = client.CoreV1Api(api)
    spec = {
        "restartPolicy": "Never",
        "tolerations": [GPU_TOLERATION],
        "containers": [
            container(
                "train",
                "echo training on $NODE",
                resources=GPU_LIMITS,
                env=[{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            )
        ],
    }
    batch.create_namespaced_job(k8s_namespace, job_manifest("gpu-train", spec, backoffLimit=0))

    def complete() -> bool:
        status = batch.read_namespaced_job_status("gpu-train", k8s_namespace).status
        return bool(status.succeeded)

    wait_for("job gpu-train to succeed", complete, timeout=90)
    pods = job_pods(core, k8s_namespace, "gpu-train")
    assert [p["spec"]["nodeName"] for p in pods] == ["arkor-gpu-0"]
    assert pods[0]["status"]["phase"] == "Succeeded"
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    logs = k8s_cluster.kubectl("logs", "-n", k8s_namespace, pods[0]["metadata"]["name"]).stdout
    assert logs.strip() == "training on arkor-gpu-0"


def test_gpu_pod_without_toleration_stays_pending_unschedulable(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    body = pod_manifest("no-toleration", [container("c", "sleep 1", resources=GPU_LIMITS)])
    core.create_namespaced_pod(k8s_namespace, body)

    def unschedulable() -> dict | None:
        pod = read_pod(core, k8s_namespace, "no-toleration") or {}
        conditions = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
        cond = conditions.get("PodScheduled")
        return cond if cond and cond.get("reason") == "Unschedulable" else None

    cond = wait_for("PodScheduled=False/Unschedulable", unschedulable, timeout=60)
    assert cond["status"] == "False"
    assert (
        "untolerated taint" in cond["message"] or "Insufficient nvidia.com/gpu" in cond["message"]
    )
    pod = read_pod(core, k8s_namespace, "no-toleration")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_cpu_pod_lands_on_cpu_pool(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    core.create_namespaced_pod(k8s_namespace, pod_manifest("cpu", [container("c", "exit 3")]))

    def failed() -> dict | None:
        pod = read_pod(core, k8s_namespace, "cpu") or {}
        return pod if pod.get("status", {}).get("phase") == "Failed" else None

    pod = wait_for("pod to fail", failed)
    assert pod["spec"]["nodeName"] == "arkor-cpu-0"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
