"""A run that asks for a GPU type no node has explains why, and cancel leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]


async def test_unknown_gpu_type_names_the_scheduling_reason_and_cancel_cleans_up(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    settings = kube_settings.model_copy(update={"gpu_type": "NVIDIA-B200-NOWHERE"})
    backend = KubernetesBackend(settings)
    phases: list[Any] = []
    unschedulable = asyncio.Event()

    def on_phase(ctx: Any) -> None:
        phases.append(ctx)
        if ctx.phase == "unschedulable":
            unschedulable.set()

    trainer = create_async_trainer(
        **run_config(), backend=backend, callbacks={"on_phase": on_phase}
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(unschedulable.wait(), timeout=120)
        phase = next(p for p in phases if p.phase == "unschedulable")
        assert "node" in (phase.message or "") and "affinity" in (phase.message or "")
        assert "GPU_TYPE" in (phase.hint or "")

        await trainer.cancel()
        result = await asyncio.wait_for(waiting, timeout=60)
        assert result.job.status == "cancelled"
    finally:
        waiting.cancel()
        await backend.aclose()
    left = k8s_cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", k8s_namespace,
        "-l", "app.kubernetes.io/managed-by=arkor-ops", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""
    assert job_id not in k8s_cluster.kubectl("get", "all", "-n", k8s_namespace, "-o", "name").stdout
