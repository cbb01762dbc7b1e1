"""Checkpoints as objects on the local cluster: listed through the client's S3 endpoint and the
Job's storage annotation; a second Job starts from the first run's final adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.checkpoints import events_so_far
from arkor_ops.errors import CheckpointError

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


async def test_checkpoints_of_a_cluster_run_and_a_run_started_from_one(
    backend: KubernetesBackend, run_config: Callable[..., dict[str, Any]]
) -> None:
    losses: dict[int, float | None] = {}
    trainer = create_async_trainer(
        **run_config(name="ckpt-parent"),
        backend=backend,
        on_log=lambda ctx: losses.__setitem__(ctx.step, ctx.loss),
    )
    result = await trainer.wait()
    assert result.job.status == "completed", result.job.error
    infos = await trainer.checkpoints()
    assert [(c.kind, c.step) for c in infos] == [("checkpoint", 3), ("checkpoint", 6), ("final", 6)]
    assert {a.uri for a in result.artifacts} == {c.uri for c in infos}
    assert all(c.size > 0 and c.train_loss == losses[c.step] for c in infos)

    phases: list[str] = []
    child = create_async_trainer(
        **run_config(name="ckpt-child", max_steps=2, init_adapter=infos[-1].ref()),
        backend=backend,
        on_started=lambda ctx: phases.append("started"),
    )
    done = await child.wait()
    assert done.job.status == "completed", done.job.error
    assert phases == ["started"]
    events = await events_so_far(backend, done.job.id)
    meta = next(e["metadata"] for e in events if e["type"] == "training.started")
    assert meta["initAdapter"] == infos[-1].uri and meta["initAdapterStep"] == 6
    child_infos = await child.checkpoints()
    assert child_infos[-1].kind == "final" and child_infos[-1].step == 2

    # a ref to a step never committed is refused before any Job exists
    jobs_before = {j.job.id for j in await backend.list_jobs()}
    bad = create_async_trainer(
        **run_config(name="ckpt-bad", init_adapter={"jobId": result.job.id, "step": 5}),
        backend=backend,
    )
    with pytest.raises(CheckpointError, match=r"nothing is committed at .*step-00000005"):
        await bad.start()
    assert {j.job.id for j in await backend.list_jobs()} == jobs_before
