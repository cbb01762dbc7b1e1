"""A run that cannot start explains why, and cancel leaves nothing behind: a GPU type no node
has, and an image that is in no store the node can pull from."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]


MISSING_IMAGE = "localhost/arkor-ops/no-such-trainer:0"


class Case(NamedTuple):
    """Settings that keep the run from starting, and what its phase must say."""

    update: dict[str, str]
    phase: str
    in_message: tuple[str, ...]
    in_hint: str


@pytest.mark.parametrize(
    "case",
    [
        Case(
            {"gpu_type": "NVIDIA-B200-NOWHERE"}, "unschedulable", ("node", "affinity"), "GPU_TYPE"
        ),
        Case({"image": MISSING_IMAGE}, "image-pull-error", (MISSING_IMAGE,), "ARKOR_K8S_IMAGE"),
    ],
    ids=["unknown-gpu-type", "missing-image"],
)
async def test_a_run_that_cannot_start_says_why_and_cancel_cleans_up(
    kube_settings: KubernetesSettings,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
    case: Case,
) -> None:
    settings = kube_settings.model_copy(update=case.update)
    backend = KubernetesBackend(settings)
    phases: list[Any] = []
    reported = asyncio.Event()

    def on_phase(ctx: Any) -> None:
        phases.append(ctx)
        if ctx.phase == case.phase:
            reported.set()

    trainer = create_async_trainer(
        **run_config(), backend=backend, callbacks={"on_phase": on_phase}
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(reported.wait(), timeout=120)
        phase = next(p for p in phases if p.phase == case.phase)
        assert all(part in (phase.message or "") for part in case.in_message), phase
        assert case.in_hint in (phase.hint or ""), phase

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
