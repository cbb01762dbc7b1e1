"""An evicted pod is replaced, resumes from its last committed checkpoint, and the run completes
without spending the user's retry budget (podFailurePolicy: Ignore on DisruptionTarget)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.backends.kubernetes.diagnostics import current_pod
from tests.kubernetes.helpers import ended_job_status, ended_run_events

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]

# The tiny model trains a step in ~10-40 ms, and on a busy machine the uploader (a low-priority
# child process) may commit the first checkpoint only after training ends; so the pod is evicted
# once training is past the first save, and the run is long enough for that to land mid-run.
MAX_STEPS = 600
SAVE_STEPS = 30


async def test_evicted_pod_resumes_from_checkpoint(
    backend: KubernetesBackend, run_config: Callable[..., dict[str, Any]]
) -> None:
    past_first_save = asyncio.Event()
    started: list[Any] = []
    resumed: list[Any] = []
    steps: list[int] = []

    def on_log(ctx: Any) -> None:
        steps.append(ctx.step)
        if ctx.step > SAVE_STEPS:
            past_first_save.set()

    trainer = create_async_trainer(
        **run_config(max_steps=MAX_STEPS, save_steps=SAVE_STEPS),
        backend=backend,
        callbacks={"on_started": started.append, "on_resumed": resumed.append, "on_log": on_log},
    )
    job_id = (await trainer.start()).job_id
    waiting = asyncio.create_task(trainer.wait())
    try:
        await asyncio.wait_for(past_first_save.wait(), timeout=300)
        pod = current_pod(await backend.api.job_pods(job_id))
        assert pod is not None
        # The Eviction API sets the DisruptionTarget condition, as a drain or preemption would.
        # The trainer gets SIGTERM without the pod's cancel annotation (ARKOR_POD_ANNOTATIONS): a
        # disruption, so it commits a checkpoint and exits 1 without a terminal event.
        await backend.api.evict(pod["metadata"]["name"])
        result = await asyncio.wait_for(waiting, timeout=480)
    finally:
        waiting.cancel()
    assert result.job.status == "completed", result.job
    # One start; the replacement pod's takeover is a resume, reported as such.
    assert len(started) == 1 and len(resumed) == 1, (started, resumed)
    assert "disrupted" in resumed[0].reason and resumed[0].attempt == 2
    assert max(steps) == MAX_STEPS
    # The Job completes once the pod has ended: the trainer exited, then the sidecar stopped,
    # having persisted the whole log (the client may see the terminal event before that).
    status = await ended_job_status(backend, job_id)
    assert not status.get("failed"), "a disruption must not count against backoffLimit"
    events = await ended_run_events(backend, job_id)
    assert [e["type"] for e in events].count("training.started") == 1
    (resume,) = [e for e in events if e["type"] == "training.resumed"]
    # The evicted pod committed a checkpoint at the step it stopped on, wrote no terminal event,
    # and the replacement resumed from that checkpoint; ids run on across both pods.
    first_pod = [e for e in events if e["id"] < resume["id"]]
    stopped = max(e["step"] for e in first_pod if e["type"] == "training.log")
    assert SAVE_STEPS < stopped < MAX_STEPS
    assert [e["step"] for e in first_pod if e["type"] == "checkpoint.saved"][-1] == stopped
    assert {e["type"] for e in first_pod} <= {
        "training.started",
        "training.log",
        "checkpoint.saved",
    }
    assert resume["step"] == resumed[0].step == stopped, resume
    assert resume["metadata"].get("resumedFromStep") == stopped, resume
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
