"""The run's Secret (dataset token, HF token) ends with the run, not with the Job's TTL.

* A follower that sees the terminal event deletes it; the Job stays (its TTL), marked.
* A pod the Job starts after that (the last one was lost while it was stopping) still starts
  and the run still completes: the trainer's reference to the Secret is optional.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.manifests import SECRET_DELETED_ANNOTATION
from tests.fixtures.cluster import K8sCluster
from tests.kubernetes.helpers import S3_SECRET

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


def secrets(cluster: K8sCluster, namespace: str) -> list[str]:
    return cluster.kubectl("get", "secrets", "-n", namespace, "-o", "name").stdout.split()


async def test_the_run_secret_is_deleted_when_the_run_ends(
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    trainer = create_async_trainer(**run_config(max_steps=2, save_steps=1), backend=backend)
    job_id = (await trainer.start()).job_id
    assert f"secret/{job_id}-secrets" in secrets(k8s_cluster, k8s_namespace)  # the HF token

    result = await trainer.wait()

    assert result.job.status == "completed"
    left = secrets(k8s_cluster, k8s_namespace)
    assert f"secret/{job_id}-secrets" not in left, left
    assert f"secret/{S3_SECRET}" in left  # the operator's S3 Secret is not the run's
    job = await backend.api.get_job(job_id)  # the Job itself stays until its TTL
    assert SECRET_DELETED_ANNOTATION in job["metadata"]["annotations"]
    assert not job["metadata"].get("deletionTimestamp")


async def test_a_pod_started_after_the_run_ended_runs_without_the_deleted_secret(
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    """The terminal event comes before the Job is Complete; losing the pod then makes the Job
    start a replacement, which must not wait forever for the Secret the follower deleted."""

    async def lose_the_pod(ctx: Any) -> None:
        # the follower has just deleted the Secret; the pod is still stopping its sidecar
        await asyncio.to_thread(
            k8s_cluster.kubectl,
            "delete", "pods", "-n", k8s_namespace, "-l", f"job-name={ctx.job.id}",
            "--grace-period=0", "--force", "--wait=false",
        )  # fmt: skip

    trainer = create_async_trainer(
        **run_config(max_steps=2, save_steps=1),
        backend=backend,
        callbacks={"on_completed": lose_the_pod},
        idempotency_key="lost-after-the-end",
    )
    result = await trainer.wait()
    assert result.job.status == "completed"
    job_id = result.job.id

    done = k8s_cluster.kubectl(
        "wait", "--for=condition=Complete", f"job/{job_id}", "-n", k8s_namespace,
        "--timeout=180s", check=False, timeout=200,
    )  # fmt: skip
    if done.returncode != 0:
        pods = k8s_cluster.kubectl("get", "pods", "-n", k8s_namespace, "-o", "wide").stdout
        raise AssertionError(f"the Job never completed: {done.stderr}\n{pods}")
    # a second follower (the flow's wait task adopts the Job) gets the completed run
    again = create_async_trainer(
        **run_config(max_steps=2, save_steps=1),
        backend=backend,
        idempotency_key="lost-after-the-end",
    )
    assert (await again.start()).job_id == job_id
    assert (await again.wait()).job.status == "completed"
    assert f"secret/{job_id}-secrets" not in secrets(k8s_cluster, k8s_namespace)
