"""Callbacks: names (snake and Arkor camel), contexts, outcomes, sync and async use."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from arkor_ops import (
    CancelledContext,
    CompletedContext,
    PhaseContext,
    create_async_trainer,
    create_trainer,
)
from arkor_ops.events import JobPhase
from arkor_ops.testing import Connection, scripted_events
from tests.core.helpers import CONFIG, JOB


def test_callbacks_mapping_accepts_arkor_camel_case_names(fake_factory):
    fake = fake_factory(scripted_events(JOB, steps=2))
    seen: list[str] = []

    async def on_completed(ctx: CompletedContext) -> None:
        seen.append(f"completed:{ctx.metrics.total_steps}")

    trainer = create_trainer(
        CONFIG,
        backend=fake,
        callbacks={
            "onStarted": lambda ctx: seen.append("started"),
            "onLog": lambda ctx: seen.append(f"log{ctx.step}"),
            "on_checkpoint": lambda ctx: seen.append(f"ckpt{ctx.step}"),
            "onCompleted": on_completed,
        },
    )
    result = trainer.wait()
    assert seen == ["started", "log1", "log2", "ckpt2", "completed:2"]
    assert result.job.status == "completed"
    assert [a.kind for a in result.artifacts] == ["final"]
    assert result.metrics is not None and result.metrics.final_loss == 1.0


def test_a_callback_given_both_ways_is_an_error():
    with pytest.raises(TypeError, match="given both"):
        create_trainer(CONFIG, callbacks={"onLog": print}, on_log=print)
    with pytest.raises(TypeError, match="given twice"):
        create_trainer(CONFIG, callbacks={"onLog": print, "on_log": print})
    with pytest.raises(TypeError, match="unknown callback 'onProgress'"):
        create_trainer(CONFIG, callbacks={"onProgress": print})
    with pytest.raises(TypeError, match="not callable"):
        create_trainer(CONFIG, on_log="print")


async def test_a_failed_run_returns_and_only_on_failed_fires(fake_factory):
    fake = fake_factory(scripted_events(JOB, steps=2, outcome="failed"))
    seen: list[Any] = []
    trainer = create_async_trainer(
        CONFIG, backend=fake, on_failed=seen.append, on_completed=seen.append
    )
    result = await trainer.wait()
    (ctx,) = seen
    assert (ctx.error, ctx.step) == ("CUDA OOM", 2)
    assert (result.job.status, result.job.error, result.artifacts) == ("failed", "CUDA OOM", [])
    assert trainer.job == result.job


async def test_cancel_ends_a_waiting_run_with_on_cancelled(fake_factory):
    """cancel() asks the backend; the stream then ends with training.cancelled."""
    fake = fake_factory(scripted_events(JOB, steps=2, outcome=None))
    seen: list[CancelledContext] = []
    trainer = create_async_trainer(CONFIG, backend=fake, on_cancelled=seen.append)

    async def cancel_after_logs() -> None:
        while len(fake.stream_requests) < 1:
            await asyncio.sleep(0.01)
        await trainer.cancel()

    result, _ = await asyncio.gather(trainer.wait(), cancel_after_logs())
    assert result.job.status == "cancelled"
    assert result.job.completed_at is not None
    assert [(c.step, c.job.status) for c in seen] == [(2, "cancelled")]
    assert fake.cancels == [JOB]


async def test_phase_events_reach_on_phase_without_changing_the_outcome(fake_factory):
    phase = JobPhase(
        job_id=JOB,
        phase="unschedulable",
        reason="Unschedulable",
        message="0/3 nodes have nvidia.com/gpu",
        hint="add a GPU node pool",
    )
    fake = fake_factory([phase, *scripted_events(JOB, steps=1)])
    seen: list[PhaseContext] = []
    result = await create_async_trainer(CONFIG, backend=fake, on_phase=seen.append).wait()
    assert [(p.phase, p.reason, p.hint, p.job.status) for p in seen] == [
        ("unschedulable", "Unschedulable", "add a GPU node pool", "queued")
    ]
    assert result.job.status == "completed"


async def test_a_phase_this_version_does_not_know_still_reaches_on_phase(fake_factory):
    newer = {"type": "job.phase", "jobId": JOB, "phase": "hibernating", "message": "from v9"}
    fake = fake_factory([newer, *scripted_events(JOB, steps=1)])
    seen: list[PhaseContext] = []
    await create_async_trainer(CONFIG, backend=fake, on_phase=seen.append).wait()
    assert [(p.phase, p.message) for p in seen] == [("hibernating", "from v9")]


async def test_sync_trainer_works_inside_a_running_event_loop(fake_factory):
    """A plain Trainer called from a coroutine (a thread that runs a loop) still works."""
    fake = fake_factory(scripted_events(JOB, steps=1))
    trainer = create_trainer(CONFIG, backend=fake)
    assert trainer.start().job_id == JOB
    assert trainer.wait().job.status == "completed"
    trainer.cancel()
    assert fake.cancels == [JOB]


async def test_end_frame_resolves_with_last_known_status(fake_factory):
    fake = fake_factory(
        scripted_events(JOB, steps=3, outcome=None), connections=[Connection(frames=2, then="end")]
    )
    seen: list[Any] = []
    result = await create_async_trainer(
        CONFIG, backend=fake, on_completed=seen.append, on_failed=seen.append
    ).wait()
    assert (result.job.status, result.artifacts, result.metrics, seen) == (
        "running",
        [],
        None,
        [],
    )


async def test_a_failed_submit_can_be_retried_by_the_next_start(fake_factory):
    from arkor_ops import BackendError
    from arkor_ops.testing import Fault

    fake = fake_factory(scripted_events(JOB), submit_faults=[Fault(status=500, error="etcd")])
    trainer = create_async_trainer(CONFIG, backend=fake)
    with pytest.raises(BackendError, match="etcd"):
        await trainer.start()
    assert trainer.job_id is None
    assert (await trainer.start()).job_id == JOB
    assert len(fake.submits) == 2


async def test_idempotency_key_reaches_the_backend(fake_factory):
    fake = fake_factory(scripted_events(JOB))
    await create_async_trainer(CONFIG, backend=fake, idempotency_key="flow-run-42").start()
    assert fake.submits[0]["idempotencyKey"] == "flow-run-42"


def test_an_observer_sees_the_same_events_after_the_runs_own_callbacks(fake_factory):
    fake = fake_factory(scripted_events(JOB, steps=3))
    seen: list[str] = []
    trainer = create_trainer(CONFIG, backend=fake, on_log=lambda ctx: seen.append(f"own{ctx.step}"))
    with trainer.observing(on_log=lambda ctx: seen.append(f"obs{ctx.step}")):
        assert trainer.wait().job.status == "completed"
    assert seen == ["own1", "obs1", "own2", "obs2", "own3", "obs3"]

    again = create_trainer(CONFIG, backend=fake_factory(scripted_events(JOB, steps=2)))
    with again.observing(on_log=lambda ctx: seen.append("inside")):
        pass
    again.wait()  # observed only while the block ran
    assert "inside" not in seen
    with pytest.raises(TypeError, match="unknown callback 'onLog'"):
        again.observing(onLog=print).__enter__()
