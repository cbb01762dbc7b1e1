"""Deletion delivers SIGTERM then SIGKILL after the grace period; Jobs replace killed pods."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import (
    container,
    job_manifest,
    job_pods,
    pod_manifest,
    read_pod,
    wait_for,
    wait_running,
)

pytestmark = pytest.mark.cluster


def _marker_pod(name: str, script: str, marker_dir: Path, grace: int) -> dict:
    return pod_manifest(
        name,
        [container("main", script, volumeMounts=[{"name": "marker", "mountPath": "/marker"}])],
        volumes=[{"name": "marker", "hostPath": {"path": str(marker_dir)}}],
        terminationGracePeriodSeconds=grace,
    )


def _pid_gone(pid: int) -> bool:
    """Whether ``pid`` has ended (zombies included)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_delete_sends_sigterm_to_the_container(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    script = (
        "trap 'echo got SIGTERM > /marker/term; exit 0' TERM; echo $$ > /marker/pid; "
        "while true; do sleep 0.1; done"
    )
    # a grace period of an hour: the pod is gone within the wait only if the trap's exit ends it
    core.create_namespaced_pod(k8s_namespace, _marker_pod("trap", script, tmp_path, grace=3600))
    wait_running(core, k8s_namespace, "trap")
    wait_for("pid file", (tmp_path / "pid").exists)
    core.delete_namespaced_pod("trap", k8s_namespace)
    wait_for("pod removed", lambda: read_pod(core, k8s_namespace, "trap") is None, timeout=120)
    assert (tmp_path / "term").read_text().strip() == "got SIGTERM"
    assert _pid_gone(int((tmp_path / "pid").read_text()))


def test_process_ignoring_sigterm_is_killed_after_grace_period(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    script = "trap '' TERM; echo $$ > /marker/pid; while true; do sleep 0.1; done"
    core.create_namespaced_pod(k8s_namespace, _marker_pod("stubborn", script, tmp_path, grace=3))
    wait_running(core, k8s_namespace, "stubborn")
    wait_for("pid file", (tmp_path / "pid").exists)
    pid = int((tmp_path / "pid").read_text())
    core.delete_namespaced_pod("stubborn", k8s_namespace)
    time.sleep(1.5)
    assert not _pid_gone(pid), "SIGTERM is ignored, so it survives inside the grace period"
    wait_for("pod removed", lambda: read_pod(core, k8s_namespace, "stubborn") is None, timeout=60)
    assert _pid_gone(pid)  # killed once the grace period ran out


def test_job_replaces_a_killed_pod(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    api = k8s_cluster.api_client()
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    script = (
        "if [ -e /marker/first ]; then echo second run; exit 0; fi; "
        "touch /marker/first; echo $$ > /marker/pid; while true; do sleep 0.1; done"
    )
    spec = _marker_pod("x", script, tmp_path, grace=5)["spec"]
    batch.create_namespaced_job(k8s_namespace, job_manifest("retry", spec, backoffLimit=2))
    wait_for("first pod's pid", (tmp_path / "pid").exists)
    first = job_pods(core, k8s_namespace, "retry")
    assert len(first) == 1
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)

    def done() -> client.V1JobStatus | None:
        status = batch.read_namespaced_job_status("retry", k8s_namespace).status
        return status if status.succeeded else None

    status = wait_for("job to succeed after a retry", done, timeout=120)
    assert status.failed == 1
    pods = {p["metadata"]["name"]: p for p in job_pods(core, k8s_namespace, "retry")}
    killed = pods[first[0]["metadata"]["name"]]
    terminated = killed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert killed["status"]["phase"] == "Failed"
    assert terminated["exitCode"] == 137
    assert sorted(p["status"]["phase"] for p in pods.values()) == ["Failed", "Succeeded"]


def test_foreground_job_deletion_removes_its_running_pod(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    api = k8s_cluster.api_client()
    core = client.CoreV1Api(api)
    batch = client.BatchV1Api(api)
    spec = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "containers": [container("c", "while true; do sleep 0.1; done")],
    }
    batch.create_namespaced_job(k8s_namespace, job_manifest("long", spec))
    wait_for(
        "job pod running",
        lambda: [
            p
            for p in job_pods(core, k8s_namespace, "long")
            if p["status"].get("phase") == "Running"
        ],
    )
    batch.delete_namespaced_job("long", k8s_namespace, propagation_policy="Foreground")
    wait_for(
        "job and pods gone",
        lambda: (
            not job_pods(core, k8s_namespace, "long")
            and not [
                j
                for j in batch.list_namespaced_job(k8s_namespace).items
                if j.metadata.name == "long"
            ]
        ),
        timeout=60,
    )


def test_native_sidecar_and_init_container_order(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    mount = [{"name": "marker", "mountPath": "/marker"}]
    init = container("init", "echo init >> /marker/order", volumeMounts=mount)
    sidecar = container(
        "sidecar",
        "trap 'echo sidecar-stopped >> /marker/order; exit 0' TERM; "
        "echo sidecar-started >> /marker/order; while true; do sleep 0.1; done",
        volumeMounts=mount,
        restartPolicy="Always",
    )
    main = container("main", "sleep 0.5; echo main >> /marker/order", volumeMounts=mount)
    body = pod_manifest(
        "sidecar",
        [main],
        initContainers=[init, sidecar],
        volumes=[{"name": "marker", "hostPath": {"path": str(tmp_path)}}],
    )
    core.create_namespaced_pod(k8s_namespace, body)

    def succeeded() -> dict | None:
        pod = read_pod(core, k8s_namespace, "sidecar") or {}
        return pod if pod.get("status", {}).get("phase") == "Succeeded" else None

    pod = wait_for("pod with sidecar to succeed", succeeded, timeout=60)
    lines = (tmp_path / "order").read_text().split()
    assert lines == ["init", "sidecar-started", "main", "sidecar-stopped"]
    inits = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert inits["init"]["state"]["terminated"]["exitCode"] == 0
    assert "terminated" in inits["sidecar"]["state"]


def test_on_failure_restarts_the_container_and_keeps_empty_dir(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    script = "if [ -e /data/once ]; then echo second; exit 0; fi; touch /data/once; exit 1"
    body = pod_manifest(
        "flaky",
        [container("c", script, volumeMounts=[{"name": "data", "mountPath": "/data"}])],
        restartPolicy="OnFailure",
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    core.create_namespaced_pod(k8s_namespace, body)

    def succeeded() -> dict | None:
        pod = read_pod(core, k8s_namespace, "flaky") or {}
        return pod if pod.get("status", {}).get("phase") == "Succeeded" else None

    pod = wait_for("pod to succeed after one restart", succeeded, timeout=60)
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
