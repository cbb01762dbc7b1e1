"""cancel() while training: training.cancelled arrives and nothing of the run is left."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.cli import ops
from arkor_ops.errors import JobNotFoundError
from tests.fixtures.cluster import K8sCluster
from tests.fixtures.s3 import S3Server

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


async def test_cancel_while_training(
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    s3_server: S3Server,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    logged = asyncio.Event()
    cancelled: list[Any] = []

    def on_log(ctx: Any) -> None:
        if ctx.step >= 2:
            logged.set()

    trainer = create_async_trainer(
        **run_config(max_steps=1_000_000, save_steps=1000),  # runs until cancelled
        backend=backend,
        callbacks={"on_log": on_log, "on_cancelled": cancelled.append},
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(logged.wait(), timeout=300)
        # describe() reads what the live sidecar has so far, though this run never goes quiet
        # (a step every few ms): it used to read on for as long as the run kept logging
        seen = await asyncio.wait_for(backend.describe(job_id), timeout=60)
        assert seen.job.status == "running" and (seen.step or 0) >= 2, seen
        # so does `arkor-ops logs` without -f: it prints what is there and returns
        printed = io.StringIO()
        status = await asyncio.wait_for(
            ops.follow(backend, job_id, follow=False, out=Console(file=printed)), timeout=60
        )
        assert status == 0 and "training started" in printed.getvalue()
        assert f"step {seen.step} " in printed.getvalue(), printed.getvalue()[-500:]
        await trainer.cancel()
        # cancel() returned: the Job and every pod of the run are gone already.
        with pytest.raises(JobNotFoundError):
            await backend.api.get_job(job_id)
        assert await backend.api.job_pods(job_id) == []
        result = await asyncio.wait_for(waiting, timeout=60)
    finally:
        waiting.cancel()
    assert result.job.status == "cancelled" and len(cancelled) == 1

    # The trainer itself wrote training.cancelled, and the sidecar persisted it.
    bucket, _, prefix = backend.settings.storage_uri.removeprefix("s3://").partition("/")  # type: ignore[union-attr]
    body = s3_server.client().get_object(Bucket=bucket, Key=f"{prefix}/{job_id}/events.jsonl")
    types = [json.loads(line)["type"] for line in body["Body"].read().splitlines() if line]
    assert types[-1] == "training.cancelled"

    await trainer.cancel()  # a second cancel is harmless
    await backend.cancel(job_id)
    left = k8s_cluster.kubectl(
        "get", "jobs,pods,configmaps,secrets", "-n", k8s_namespace,
        "-l", "app.kubernetes.io/managed-by=arkor-ops", "-o", "name",
    ).stdout  # fmt: skip
    assert left.strip() == ""
