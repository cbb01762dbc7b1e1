"""A run completes through create_trainer(..., backend=KubernetesBackend(...))."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import HF_TOKEN, job_yaml, recorder

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


async def test_run_completes_and_replays_from_s3_after_the_pod_is_gone(  # noqa: PLR0917
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    s3_bucket: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    seen, callbacks = recorder()
    trainer = create_async_trainer(
        **run_config(), backend=backend, callbacks=callbacks, idempotency_key="happy-1"
    )
    result = await trainer.wait()
    assert result.job.status == "completed", [n for n, _ in seen]

    order = [name for name, _ in seen if name != "on_phase"]
    assert order[0] == "on_started" and order[-1] == "on_completed"
    assert order.count("on_log") >= 6 and order.count("on_checkpoint") >= 1
    steps = [ctx.step for name, ctx in seen if name == "on_log"]
    assert steps == sorted(steps)

    final = [a for a in result.artifacts if a.kind == "final"]
    assert final and final[0].uri.startswith(f"s3://{s3_bucket}/")
    keys = [
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])
    ]
    assert any("/final/" in k for k in keys), keys

    job_id = result.job.id
    listed = k8s_cluster.kubectl(
        "get", "jobs", "-n", k8s_namespace, "-l", "app.kubernetes.io/managed-by=arkor-ops",
        "-o", "name",
    ).stdout  # fmt: skip
    assert f"job.batch/{job_id}" in listed
    yaml_text = job_yaml(k8s_cluster, k8s_namespace, "job", job_id)
    yaml_text += job_yaml(k8s_cluster, k8s_namespace, "pods", "-l", f"job-name={job_id}")
    for secret in (HF_TOKEN, s3_server.secret_key, s3_server.access_key):
        assert secret not in yaml_text
    assert "secretKeyRef" in yaml_text

    described = await backend.describe(job_id)
    assert described.job.status == "completed" and described.step == 6

    # The pod is gone: a new trainer adopting the same Job replays the history from S3.
    k8s_cluster.kubectl("delete", "pods", "-n", k8s_namespace, "-l", f"job-name={job_id}", "--wait")
    seen2, callbacks2 = recorder()
    again = create_async_trainer(
        **run_config(), backend=backend, callbacks=callbacks2, idempotency_key="happy-1"
    )
    started = await again.start()
    assert started.job_id == job_id
    result2 = await again.wait()
    assert result2.job.status == "completed"
    assert [n for n, _ in seen2 if n != "on_phase"] == order
    assert [a.uri for a in result2.artifacts] == [a.uri for a in result.artifacts]


async def test_same_idempotency_key_creates_one_job(
    backend: KubernetesBackend, k8s_cluster: K8sCluster, k8s_namespace: str, run_config: Any
) -> None:
    from arkor_ops.config import validate_config

    config = validate_config(run_config(max_steps=1))
    first = await backend.submit(config, idempotency_key="flow-run-42")
    second = await backend.submit(config, idempotency_key="flow-run-42")
    other = KubernetesBackend(backend.settings)
    try:
        third = await other.submit(config, idempotency_key="flow-run-42")
    finally:
        await other.aclose()
    assert first.id == second.id == third.id
    names = k8s_cluster.kubectl(
        "get", "jobs", "-n", k8s_namespace, "-o", "jsonpath={.items[*].metadata.name}"
    ).stdout.split()
    assert names == [first.id]
    await backend.cancel(first.id)
