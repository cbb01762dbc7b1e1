"""An evaluation Job that cannot be scheduled says why through ``on_phase``, as a training run
does (tests/kubernetes/test_pending.py), and cancelling it leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arkor_ops import create_async_evaluator
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.results import PhaseContext
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]

MANAGED = "app.kubernetes.io/managed-by=arkor-ops"


def _left(cluster: K8sCluster, namespace: str) -> list[str]:
    out = cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", namespace, "-l", MANAGED, "-o", "name"
    )
    return out.stdout.split()


async def test_an_unschedulable_evaluation_names_the_reason_and_cancel_cleans_up(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_files: Path,
) -> None:
    settings = kube_settings.model_copy(update={"gpu_type": "NVIDIA-B200-NOWHERE"})
    backend = KubernetesBackend(settings)
    phases: list[PhaseContext] = []
    unschedulable = asyncio.Event()

    def on_phase(ctx: PhaseContext) -> None:
        phases.append(ctx)
        if ctx.phase == "unschedulable":
            unschedulable.set()

    evaluator = create_async_evaluator(
        name="Kube Eval Pending",
        model=str(run_files / "model"),
        evaluation={
            "dataset": {"type": "file", "path": str(run_files / "train.jsonl")},
            "metrics": ["exact_match"],
        },
        backend=backend,
        on_phase=on_phase,
    )
    job_id = await evaluator.start()
    waiting = asyncio.create_task(evaluator.wait())
    try:
        await asyncio.wait_for(unschedulable.wait(), timeout=60)
        phase = next(p for p in phases if p.phase == "unschedulable")
        assert phase.job.id == job_id
        assert phase.reason == "Unschedulable", phase
        assert "node" in (phase.message or "") and "affinity" in (phase.message or "")
        assert "GPU_TYPE" in (phase.hint or "")
        assert not waiting.done()  # still waiting: an unschedulable Job is not an outcome
        # what the cancel must remove: the Job, its pod, its ConfigMap and Secret (the HF token)
        assert {f"configmap/{job_id}-config", f"secret/{job_id}-secrets"} <= set(
            _left(k8s_cluster, k8s_namespace)
        )

        await evaluator.cancel()
        result = await asyncio.wait_for(waiting, timeout=60)
        assert result.status == "cancelled"
    finally:
        waiting.cancel()
        await backend.aclose()
    assert _left(k8s_cluster, k8s_namespace) == []
    # another process, which never saw the Job (gone, no log line): still an evaluation's end
    other = KubernetesBackend(settings)
    try:
        frames = [frame async for frame in other.events(job_id)]
    finally:
        await other.aclose()
    assert [f.event for f in frames][-2:] == ["evaluation.cancelled", "end"], frames
