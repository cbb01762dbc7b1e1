"""Adopting a Job by idempotency key (every flow run submits twice): a failure while completing
the adopted Job never deletes it, and a key reused with another config is refused by name.

The runs ask for a node pool no node has, so their pods stay Pending: nothing trains.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.config import validate_config
from arkor_ops.errors import BackendError, QuotaExceededError
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]

NOWHERE = {"arkor-ops.dev/pool": "nowhere"}  # no node has it: the run's pod stays Pending


def zero_quota(cluster: K8sCluster, namespace: str, resource: str) -> None:
    """A ResourceQuota allowing no more ``resource`` objects, once the controller counted them.

    The real API server then refuses every create of that kind with 403 "exceeded quota".
    """
    body = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": f"no-{resource}", "namespace": namespace},
        "spec": {"hard": {resource: "0"}},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    deadline = time.monotonic() + 60
    while True:
        used = cluster.kubectl(
            "get", "resourcequota", f"no-{resource}", "-n", namespace,
            "-o", f"jsonpath={{.status.used.{resource}}}",
        ).stdout  # fmt: skip
        if used.strip():
            return
        assert time.monotonic() < deadline, "the quota controller never counted the namespace"
        time.sleep(0.5)


def job_uid(cluster: K8sCluster, namespace: str, name: str) -> str:
    return cluster.kubectl(
        "get", "job", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout.strip()


@pytest.mark.parametrize("resource", ["configmaps", "secrets"])
async def test_a_failure_while_adopting_never_deletes_the_existing_job(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
    resource: str,
) -> None:
    backend = KubernetesBackend(kube_settings.model_copy(update={"node_selector": NOWHERE}))
    config = validate_config(run_config())
    first = await backend.submit(config, idempotency_key="flow-run-7")
    uid = job_uid(k8s_cluster, k8s_namespace, first.id)
    try:
        # the flow's wait task submits again; this time the API server refuses the run's
        # ConfigMap (or Secret) with 403 "exceeded quota" while the Job already runs
        zero_quota(k8s_cluster, k8s_namespace, resource)
        with pytest.raises(BackendError) as info:
            await backend.submit(config, idempotency_key="flow-run-7")
        assert isinstance(info.value, QuotaExceededError), info.value
        assert info.value.status == 403

        # the Job this call did not create is untouched: same uid, not being deleted
        job = await backend.api.get_job(first.id)
        assert job["metadata"]["uid"] == uid
        assert not job["metadata"].get("deletionTimestamp"), job["metadata"]
    finally:
        k8s_cluster.kubectl("delete", "resourcequota", "--all", "-n", k8s_namespace)
        await backend.cancel(first.id)
        await backend.aclose()


async def test_a_key_reused_with_another_config_is_refused_naming_both_hashes(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    backend = KubernetesBackend(kube_settings.model_copy(update={"node_selector": NOWHERE}))
    config = validate_config(run_config(max_steps=6))
    other = validate_config(run_config(max_steps=7))
    first = await backend.submit(config, idempotency_key="flow-run-8")
    uid = job_uid(k8s_cluster, k8s_namespace, first.id)
    try:
        with pytest.raises(BackendError) as info:
            await backend.submit(other, idempotency_key="flow-run-8")
        message = str(info.value)
        assert info.value.status == 409
        assert config.config_hash() in message and other.config_hash() in message, message
        assert f"{k8s_namespace}/{first.id}" in message

        # nothing changed, and the same config still adopts the Job
        assert job_uid(k8s_cluster, k8s_namespace, first.id) == uid
        again = await backend.submit(config, idempotency_key="flow-run-8")
        assert again.id == first.id
    finally:
        await backend.cancel(first.id)
        await backend.aclose()
