"""What a user sees when a later attempt takes over a run: one start, one resume, re-done steps.

The stream is what a Kubernetes run produces after its trainer was killed at step 5 and the
replacement resumed from the checkpoint at step 4: ``training.resumed`` (ours; Arkor skips it),
and, when the log the replacement continued had lost the first start, a second
``training.started`` too. Also the retried failure: ``job.phase`` ``retrying`` is not an end.
"""

from __future__ import annotations

from typing import Any

import pytest

from arkor_ops import ResumedContext, create_async_trainer, parse_event
from arkor_ops.events import (
    JobPhase,
    TrainingCompleted,
    TrainingLog,
    TrainingResumed,
    TrainingStarted,
)
from tests.core.helpers import CONFIG, JOB


def _resumed_stream(second_start: bool) -> list[Any]:
    events: list[Any] = [TrainingStarted(job_id=JOB)]
    events += [TrainingLog(job_id=JOB, step=s, loss=1.0 / s) for s in range(1, 6)]
    if second_start:
        events.append(TrainingStarted(job_id=JOB, metadata={"attempt": 2}))
    events.append(TrainingResumed(job_id=JOB, step=4, reason="killed", attempt=2))
    events += [TrainingLog(job_id=JOB, step=s, loss=0.5 / s) for s in range(5, 8)]
    events.append(TrainingCompleted(job_id=JOB))
    return events


@pytest.mark.parametrize("second_start", [False, True])
async def test_a_resume_is_one_on_resumed_and_never_a_second_on_started(
    fake_factory: Any, second_start: bool
) -> None:
    fake = fake_factory(_resumed_stream(second_start))
    seen: list[tuple[str, Any]] = []
    trainer = create_async_trainer(
        CONFIG,
        backend=fake,
        on_started=lambda ctx: seen.append(("started", None)),
        callbacks={"onResumed": lambda ctx: seen.append(("resumed", ctx))},
        on_log=lambda ctx: seen.append(("log", ctx.step)),
    )
    result = await trainer.wait()
    assert result.job.status == "completed"
    names = [name for name, _ in seen]
    assert names.count("started") == 1, names
    assert names.count("resumed") == 1, names
    resumed = next(ctx for name, ctx in seen if name == "resumed")
    assert isinstance(resumed, ResumedContext)
    assert (resumed.step, resumed.reason, resumed.attempt) == (4, "killed", 2)
    assert resumed.job.status == "running"
    steps = [ctx for name, ctx in seen if name == "log"]
    assert steps == [1, 2, 3, 4, 5, 5, 6, 7]  # after the resume, steps above 4 are re-done


async def test_retrying_is_a_phase_and_the_run_goes_on(fake_factory):
    retrying = JobPhase(
        job_id=JOB, phase="retrying", reason="StorageError", message="S3 unavailable"
    )
    fake = fake_factory([retrying, TrainingStarted(job_id=JOB), TrainingCompleted(job_id=JOB)])
    phases: list[str] = []
    failed: list[Any] = []
    result = await create_async_trainer(
        CONFIG,
        backend=fake,
        on_phase=lambda ctx: phases.append(f"{ctx.phase}:{ctx.message}"),
        on_failed=failed.append,
    ).wait()
    assert result.job.status == "completed"
    assert phases == ["retrying:S3 unavailable"] and failed == []


def test_training_resumed_parses_and_arkor_style_clients_may_skip_it():
    event = parse_event(
        '{"id":9,"type":"training.resumed","jobId":"j","timestamp":"t","step":4,'
        '"reason":"disrupted","attempt":2,"metadata":{}}'
    )
    assert isinstance(event, TrainingResumed) and not event.terminal
    assert (event.id, event.step, event.attempt) == (9, 4, 2)
