"""What every process reads after a cancel, and what a cancel of an ended run does.

* A cancel that never reached the trainer (its pod was pending, or the canceller may not patch
  pods, so the trainer took the SIGTERM for a disruption) reads as ``cancelled`` in every
  process, not only the one that cancelled: a fresh backend, the CLI and the event stream.
* ``cancel()`` right after ``wait()`` returned ``completed`` changes nothing, though the pod is
  still stopping its sidecar (the Job is not ``Complete`` yet).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.cancel import record_uri
from arkor_ops.config import validate_config
from arkor_ops.errors import JobNotFoundError
from arkor_ops.events import TERMINAL_TYPES
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster
from tests.kubernetes.test_adopt import NOWHERE
from tests.kubernetes.test_cli import cli

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(600)]


async def terminal_types(backend: KubernetesBackend, job_id: str) -> list[str]:
    """The terminal event types a follower of the run gets (there must be exactly one)."""
    seen = []
    async for frame in backend.events(job_id):
        if frame.event in TERMINAL_TYPES:
            seen.append(frame.event)
        if frame.event == "end":
            break
    return seen


async def assert_reads_cancelled(settings: KubernetesSettings, job_id: str) -> None:
    """Another process (a fresh backend, the CLI) reads the run as cancelled."""
    fresh = KubernetesBackend(settings)
    try:
        described = await fresh.describe(job_id)
        assert described.job.status == "cancelled", described
        assert await asyncio.wait_for(terminal_types(fresh, job_id), 60) == ["training.cancelled"]
    finally:
        await fresh.aclose()
    status = cli(settings, "status", job_id)
    assert status.returncode == 0, status.stderr
    assert "cancelled" in status.stdout and "failed" not in status.stdout, status.stdout


def canceller_without_pod_patch(cluster: K8sCluster, namespace: str) -> Any:
    """A client identity allowed everything cancel does except patching pods.

    Its cancel cannot put the annotation on the pod, so the trainer reads the SIGTERM as a
    disruption and writes no terminal event: the cancel never reaches it.
    """
    from kubernetes import client

    name = "canceller-without-pod-patch"
    rules = [
        {
            "apiGroups": ["batch"],
            "resources": ["jobs"],
            "verbs": ["get", "list", "patch", "delete"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["delete"]},
    ]
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
    for obj in objects:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(obj))
    token = cluster.kubectl("create", "token", name, "-n", namespace).stdout.strip()
    admin = cluster.configuration()
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl = admin.host, admin.ssl_ca_cert, admin.verify_ssl
    cfg.api_key = {"BearerToken": token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    return cfg


async def test_a_pending_run_cancelled_reads_cancelled_in_every_process(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    settings = kube_settings.model_copy(update={"node_selector": NOWHERE})
    canceller = KubernetesBackend(settings)
    try:
        job = await canceller.submit(validate_config(run_config()))
        await canceller.cancel(job.id)  # the trainer never ran: nothing wrote an event
        with pytest.raises(JobNotFoundError):
            await canceller.api.get_job(job.id)
    finally:
        await canceller.aclose()
    await assert_reads_cancelled(settings, job.id)


@pytest.mark.train
async def test_a_cancel_that_misses_the_trainer_reads_cancelled_in_every_process(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    logged = asyncio.Event()

    def on_log(ctx: Any) -> None:
        if ctx.step >= 1:
            logged.set()

    backend = KubernetesBackend(kube_settings)
    deaf = KubernetesBackend(
        kube_settings, configuration=canceller_without_pod_patch(k8s_cluster, k8s_namespace)
    )
    trainer = create_async_trainer(
        **run_config(max_steps=1_000_000, save_steps=1000),
        backend=backend,
        callbacks={"on_log": on_log},
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(logged.wait(), timeout=300)
        await deaf.cancel(job_id)
        with pytest.raises(JobNotFoundError):
            await backend.api.get_job(job_id)
        result = await asyncio.wait_for(waiting, timeout=120)
        assert result.job.status == "cancelled"
    finally:
        waiting.cancel()
        await deaf.aclose()
        await backend.aclose()
    # the trainer heard nothing: its log has no terminal event, yet no process reads "failed"
    fresh = KubernetesBackend(kube_settings)
    try:
        stored = fresh.storage().get_bytes(fresh.events_uri(job_id, None))
        types = [json.loads(line)["type"] for line in stored.splitlines() if line.strip()]
        assert not set(types) & TERMINAL_TYPES, types
    finally:
        await fresh.aclose()
    await assert_reads_cancelled(kube_settings, job_id)


@pytest.mark.train
async def test_cancel_right_after_completed_changes_nothing(
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    trainer = create_async_trainer(**run_config(max_steps=2, save_steps=1), backend=backend)
    result = await trainer.wait()
    assert result.job.status == "completed"
    job_id = result.job.id

    await trainer.cancel()  # the pod is still stopping its sidecar: the Job is not Complete

    job = await backend.api.get_job(job_id)  # still there, not being deleted, not marked
    assert not job["metadata"].get("deletionTimestamp"), job["metadata"]
    assert "arkor-ops.dev/cancel-requested" not in (job["metadata"].get("annotations") or {})
    k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", f"job/{job_id}", "-n", k8s_namespace, "--timeout=90s",
        timeout=120,
    )  # fmt: skip
    described = await backend.describe(job_id)
    assert described.job.status == "completed", described
    stored = backend.storage().get_bytes(backend.events_uri(job_id, None))
    types = [json.loads(line)["type"] for line in stored.splitlines() if line.strip()]
    assert types[-1] == "training.completed" and "training.cancelled" not in types
    assert not backend.storage().exists(record_uri(backend.events_uri(job_id, None)))
