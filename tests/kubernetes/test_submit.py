"""The submit path on the real API server: the round trips it takes, and what a failure leaves.

* A run without a Secret is created running (no suspend, no resume): its pod waits for the
  ConfigMap volume, and it reaches Running.
* A refused ConfigMap (that run) or a refused Secret (a run with one) leaves no Job, pod,
  ConfigMap or Secret; a run with a Secret never had a pod before the Secret existed.

A ValidatingAdmissionPolicy bound to the test's namespace refuses the object, as a quota or a
cluster's own policy would.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.config import validate_config
from arkor_ops.errors import BackendError
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]


def _refuse(cluster: K8sCluster, namespace: str, resource: str, name: str) -> None:
    """Refuse every run-labelled ``resource`` in ``namespace`` until the policy is deleted."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": [resource],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.metadata.labels) || "
                    "!('app.kubernetes.io/managed-by' in object.metadata.labels)",
                    "message": f"refused: no run {resource} here",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    kind = {"configmaps": "ConfigMap", "secrets": "Secret"}[resource]
    probe = json.dumps(
        {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {
                "name": "probe",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "arkor-ops"},
            },
        }
    )
    for _ in range(60):
        done = cluster.kubectl("create", "-f", "-", input=probe, check=False)
        if "refused" in done.stderr:
            return
        if done.returncode == 0:
            cluster.kubectl("delete", resource, "probe", "-n", namespace)
        time.sleep(0.5)
    raise AssertionError(f"the policy never refused: {done.stderr}")


@pytest.fixture
def refuse(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[Callable[[str], None]]:
    """``refuse("configmaps")``: run objects of that resource are refused in the namespace."""
    names: list[str] = []

    def make(resource: str) -> None:
        name = f"refuse-{resource}-{k8s_namespace}"[:63]
        names.append(name)
        _refuse(k8s_cluster, k8s_namespace, resource, name)

    yield make
    for name in names:
        k8s_cluster.kubectl("delete", "validatingadmissionpolicybinding", name, check=False)
        k8s_cluster.kubectl("delete", "validatingadmissionpolicy", name, check=False)


def _left(cluster: K8sCluster, namespace: str) -> str:
    """The run objects still in the namespace (``kind/name`` lines), the S3 Secret aside."""
    listed = cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", namespace, "-l", m.SELECTOR, "-o", "name"
    )
    return listed.stdout.strip()


def _wait_nothing_left(cluster: K8sCluster, namespace: str) -> None:
    deadline = time.monotonic() + 60
    while left := _left(cluster, namespace):
        assert time.monotonic() < deadline, f"the failed submit left: {left}"
        time.sleep(0.5)


@pytest.fixture
def no_secret(kube_settings: KubernetesSettings) -> KubernetesSettings:
    """The test settings without the HF token: the run has no Secret."""
    return kube_settings.model_copy(update={"hf_token": None})


async def test_a_run_without_a_secret_is_created_running_and_its_pod_runs(
    no_secret: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    backend = KubernetesBackend(no_secret)
    try:
        job = await backend.submit(validate_config(run_config()))
        created = await backend.api.get_job(job.id)
        assert not created["spec"].get("suspend")  # no resume round trip
        assert _left(k8s_cluster, k8s_namespace).count("secret/") == 0
        deadline = time.monotonic() + 120
        while True:
            pods = await backend.api.job_pods(job.id)
            if any((p.get("status") or {}).get("phase") == "Running" for p in pods):
                break
            assert time.monotonic() < deadline, pods
            await asyncio.sleep(0.2)
        await backend.cancel(job.id)
    finally:
        await backend.aclose()


async def test_a_refused_config_map_leaves_nothing_of_a_run_without_a_secret(
    refuse: Callable[[str], None],
    no_secret: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    refuse("configmaps")
    backend = KubernetesBackend(no_secret)
    try:
        with pytest.raises(BackendError, match="configmaps"):
            await backend.submit(validate_config(run_config()))
    finally:
        await backend.aclose()
    _wait_nothing_left(k8s_cluster, k8s_namespace)  # the Job, and any pod it made


async def test_a_refused_secret_leaves_nothing_and_no_pod_ever_started(
    refuse: Callable[[str], None],
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    refuse("secrets")
    with pytest.raises(BackendError, match="secrets"):
        await backend.submit(validate_config(run_config()))
    _wait_nothing_left(k8s_cluster, k8s_namespace)  # the ConfigMap made beside it too
    # the Job was suspended until its Secret existed: its controller never created a pod
    events = k8s_cluster.kubectl(
        "get", "events", "-n", k8s_namespace, "--field-selector", "reason=SuccessfulCreate",
        "-o", "name",
    )  # fmt: skip
    assert not events.stdout.strip(), events.stdout
