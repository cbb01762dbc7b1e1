"""A checkpoint the worker did not upload (uploads behind training) reaches the client as
``checkpoint.skipped``: it parses, it ends nothing, and ``wait()`` goes on to the end with the
checkpoints that were committed. The worker side is ``tests/worker/test_upload_backlog.py``."""

from __future__ import annotations

from typing import Any

from arkor_ops import CheckpointSkipped, create_async_trainer, parse_event
from arkor_ops.events import (
    Artifact,
    CheckpointSaved,
    TrainingCompleted,
    TrainingLog,
    TrainingStarted,
    event_to_json,
)
from tests.core.helpers import CONFIG, JOB


def test_checkpoint_skipped_parses_with_its_step_and_is_not_terminal() -> None:
    event = parse_event(
        '{"id":12,"type":"checkpoint.skipped","jobId":"j","timestamp":"t","step":40,'
        '"reason":"uploads are 3 checkpoints behind training","backlog":3}'
    )
    assert isinstance(event, CheckpointSkipped) and not event.terminal
    assert (event.id, event.step, event.backlog) == (12, 40, 3)
    again = parse_event(event_to_json(event))
    assert again == event


async def test_wait_goes_on_past_a_skipped_checkpoint(fake_factory: Any) -> None:
    art = Artifact(kind="checkpoint", job_id=JOB, uri="s3://b/r/step-00000060", step=60)
    fake = fake_factory(
        [
            TrainingStarted(job_id=JOB),
            TrainingLog(job_id=JOB, step=40, loss=1.0),
            CheckpointSkipped(job_id=JOB, step=40, reason="uploads are behind", backlog=3),
            CheckpointSaved(job_id=JOB, step=60, artifacts=[art]),
            TrainingCompleted(job_id=JOB, artifacts=[art]),
        ]
    )
    checkpoints: list[int] = []
    result = await create_async_trainer(
        CONFIG, backend=fake, on_checkpoint=lambda ctx: checkpoints.append(ctx.step)
    ).wait()
    assert result.job.status == "completed"
    assert checkpoints == [60]  # on_checkpoint is for committed checkpoints only
