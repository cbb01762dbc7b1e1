"""Evaluation jobs on the cluster: the run's Job shape and event protocol, in the evaluation stage.

A short run is trained, then its final adapter is scored by an evaluation Job (read from S3 by
the pod, checked against its manifest); the same idempotency key adopts that Job instead of
making another. An evaluation cancelled mid-way ends as ``cancelled``, commits no results and
leaves no Job, pod, ConfigMap or Secret behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import EvaluationProgress, create_async_evaluator, create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server
from tests.kubernetes.helpers import RunInputs

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(900)]

MANAGED = "app.kubernetes.io/managed-by=arkor-ops"
#: Samples of the evaluation that is cancelled mid-way.
LONG_SAMPLES = 512


def _evaluation(inputs: RunInputs, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": inputs.dataset(),
        "metrics": ["loss", "exact_match"],
        "max_samples": 4,
        "generation": {"max_new_tokens": 8},
        **extra,
    }


def _keys(s3: S3Server, backend: KubernetesBackend, job_id: str) -> list[str]:
    bucket, _, prefix = str(backend.settings.storage_uri).removeprefix("s3://").partition("/")
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{job_id}/")
    return [o["Key"] for o in listed.get("Contents", [])]


async def test_a_trained_adapter_is_scored_by_an_evaluation_job(  # noqa: PLR0917
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    run_inputs: RunInputs,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    trainer = create_async_trainer(**run_config(max_steps=4, save_steps=100), backend=backend)
    trained = await trainer.wait()
    assert trained.job.status == "completed", trained.job.error

    progress: list[tuple[int, int]] = []

    def evaluator() -> Any:
        return create_async_evaluator(
            name="Kube Eval",
            model=run_inputs.model,
            adapter={"kind": "final", "job_id": trainer.job_id},
            evaluation=_evaluation(run_inputs),
            backend=backend,
            idempotency_key="kube-eval-1",
            callbacks={
                "on_progress": lambda e: (
                    progress.append((e.done, e.total))
                    if isinstance(e, EvaluationProgress)
                    else None
                )
            },
        )

    first = evaluator()
    result = await first.wait()
    assert result.status == "completed", result.error
    assert set(result.metrics) == {"loss", "exact_match"} and result.samples == 4
    assert progress[-1] == (4, 4)
    samples = await first.samples()
    assert len(samples) == 4 and all("answer" in s and "reference" in s for s in samples)

    stage = k8s_cluster.kubectl(
        "get", "jobs", "-n", k8s_namespace, "-l", "arkor-ops.dev/stage=evaluation",
        "-o", "jsonpath={.items[*].metadata.name}",
    ).stdout.split()  # fmt: skip
    assert stage == [first.job_id]

    again = evaluator()  # the same key: the finished job is adopted, nothing new is created
    assert (await again.start()) == first.job_id
    assert (await again.wait()).metrics == result.metrics
    jobs = k8s_cluster.kubectl(
        "get", "jobs", "-n", k8s_namespace, "-l", MANAGED, "-o", "name"
    ).stdout.split()
    assert len(jobs) == 2, jobs  # the training run and one evaluation


async def test_an_evaluation_cancelled_mid_way_leaves_nothing(  # noqa: PLR0917
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    run_files: Path,
    run_inputs: RunInputs,
) -> None:
    scoring = asyncio.Event()
    # more samples than a loaded machine scores before the cancel lands (64 once were not)
    rows = (run_files / "train.jsonl").read_text().splitlines()
    long_set = join_uri(run_inputs.bucket, "inputs", "long.jsonl")
    body = "\n".join(rows * (LONG_SAMPLES // len(rows))) + "\n"
    open_storage(long_set).put_bytes(long_set, body.encode())
    evaluator = create_async_evaluator(
        name="Kube Eval Cancel",
        model=run_inputs.model,
        evaluation=_evaluation(
            run_inputs,
            dataset={"type": "s3", "uri": long_set},
            max_samples=None,
            generation={"max_new_tokens": 256},
        ),
        backend=backend,
        callbacks={"on_progress": lambda e: scoring.set()},
    )
    job_id = await evaluator.start()
    waiting = asyncio.create_task(evaluator.wait())
    try:
        await asyncio.wait_for(scoring.wait(), timeout=300)
        await evaluator.cancel()
        result = await asyncio.wait_for(waiting, timeout=120)
    finally:
        waiting.cancel()
    assert result.status == "cancelled"
    assert result.samples is None or result.samples < LONG_SAMPLES

    left = k8s_cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", k8s_namespace, "-l", MANAGED, "-o", "name"
    ).stdout
    assert left.strip() == ""
    committed = [k for k in _keys(s3_server, backend, job_id) if k.endswith("manifest.json")]
    assert committed == []  # no results were committed: nothing can be mistaken for them
