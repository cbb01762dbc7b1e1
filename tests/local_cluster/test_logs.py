"""`kubectl logs` and `kubectl logs -f` read container output through the kubelet endpoint."""

from __future__ import annotations

import subprocess
import time

import pytest
from kubernetes import client

from tests.fixtures.cluster import K8sCluster
from tests.local_cluster.helpers import container, pod_manifest, pod_phase, wait_for, wait_running

pytestmark = pytest.mark.cluster


def test_kubectl_logs_shows_container_output(k8s_cluster: K8sCluster, k8s_namespace: str) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    script = "echo out-line; echo err-line >&2; exit 0"
    core.create_namespaced_pod(k8s_namespace, pod_manifest("hello", [container("c", script)]))
    wait_for("pod to succeed", lambda: pod_phase(core, k8s_namespace, "hello") == "Succeeded")
    logs = k8s_cluster.kubectl("logs", "-n", k8s_namespace, "hello").stdout
    assert logs.splitlines() == ["out-line", "err-line"]
    tail = k8s_cluster.kubectl("logs", "-n", k8s_namespace, "hello", "--tail=1").stdout
    assert tail.splitlines() == ["err-line"]


def test_kubectl_logs_follow_streams_until_the_container_ends(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    core = client.CoreV1Api(k8s_cluster.api_client())
    script = "for i in 1 2 3 4 5 6 7 8; do echo tick-$i; sleep 0.4; done"
    core.create_namespaced_pod(k8s_namespace, pod_manifest("ticker", [container("c", script)]))
    wait_running(core, k8s_namespace, "ticker")
    proc = subprocess.Popen(
        [k8s_cluster.kubectl_path, f"--kubeconfig={k8s_cluster.kubeconfig}", "logs", "-f",
         "-n", k8s_namespace, "ticker"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    started = time.monotonic()
    arrivals = []
    for line in proc.stdout:
        arrivals.append((time.monotonic() - started, line.strip()))
    assert proc.wait(timeout=30) == 0
    assert [text for _, text in arrivals] == [f"tick-{i}" for i in range(1, 9)]
    # Lines arrived while the container was still writing, not all at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 1.0
