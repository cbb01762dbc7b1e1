"""A waiting evaluation is never silent: ``on_phase`` on the evaluator, against the FakeBackend.

The backend explains a wait (unschedulable, pulling the image, …) as ``job.phase`` frames on the
evaluation's stream, as it does for a training run; the evaluator hands each to ``on_phase``
with the trainer's :class:`~arkor_ops.results.PhaseContext`, in stream order, before the
evaluation's own events. A scripted stream over real HTTP/SSE on loopback; the real cluster's
diagnosis of an evaluation Job is tests/kubernetes/test_evaluation_pending.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from arkor_ops import create_async_evaluator, create_evaluator
from arkor_ops.events import (
    EvaluationCompleted,
    EvaluationProgress,
    EvaluationStarted,
    JobPhase,
)
from arkor_ops.results import PhaseContext
from arkor_ops.testing import FakeBackend

pytestmark = pytest.mark.timeout(60)

JOB = "fake-eval-1"
FIELDS: dict[str, Any] = {
    "name": "Triage Eval",
    "model": "unsloth/gemma-3-270m-it",
    "evaluation": {
        "dataset": {"type": "file", "path": "/data/eval.jsonl"},
        "metrics": ["exact_match"],
    },
}
UNSCHEDULABLE = JobPhase(
    job_id=JOB,
    phase="unschedulable",
    reason="Unschedulable",
    message="0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector",
    hint="no node has the GPU type asked for: check ARKOR_K8S_GPU_TYPE",
)


def _script() -> list[Any]:
    return [
        JobPhase(job_id=JOB, phase="queued", reason="Pending"),
        UNSCHEDULABLE,
        JobPhase(job_id=JOB, phase="pulling", reason="Pulling", message="pulling the image"),
        EvaluationStarted(job_id=JOB),
        EvaluationProgress(job_id=JOB, done=1, total=1),
        EvaluationCompleted(
            job_id=JOB, metrics={"exact_match": 1.0}, samples=1, uri=f"file:///fake/{JOB}/"
        ),
    ]


async def test_phases_reach_on_phase_in_order_before_the_evaluation_starts() -> None:
    seen: list[tuple[str, ...]] = []

    def on_phase(ctx: PhaseContext) -> None:
        assert ctx.job.id == JOB
        seen.append(("phase", str(ctx.phase), ctx.reason or ""))

    with FakeBackend(_script(), job_id=JOB) as fake:
        evaluator = create_async_evaluator(
            **FIELDS,
            backend=fake,
            on_phase=on_phase,
            callbacks={"on_started": lambda e: seen.append(("started",))},
        )
        result = await evaluator.wait()
    assert result.status == "completed" and result.metrics == {"exact_match": 1.0}
    assert seen == [
        ("phase", "queued", "Pending"),
        ("phase", "unschedulable", "Unschedulable"),
        ("phase", "pulling", "Pulling"),
        ("started",),
    ]


async def test_an_unschedulable_evaluation_says_why_and_cancel_ends_it() -> None:
    phases: list[PhaseContext] = []
    waiting_phase = asyncio.Event()

    async def on_phase(ctx: PhaseContext) -> None:  # a coroutine is awaited too
        phases.append(ctx)
        waiting_phase.set()

    with FakeBackend([UNSCHEDULABLE], job_id=JOB) as fake:
        evaluator = create_async_evaluator(**FIELDS, backend=fake, callbacks={"onPhase": on_phase})
        waiting = asyncio.create_task(evaluator.wait())
        await asyncio.wait_for(waiting_phase.wait(), timeout=10)
        assert not waiting.done()  # an unschedulable job is not an outcome: wait() waits on
        (phase,) = phases
        assert (phase.phase, phase.reason) == ("unschedulable", "Unschedulable")
        assert "node affinity" in (phase.message or "")
        assert "ARKOR_K8S_GPU_TYPE" in (phase.hint or "")

        await evaluator.cancel()
        result = await asyncio.wait_for(waiting, timeout=10)
    assert result.status == "cancelled"
    assert fake.cancels == [JOB]


def test_the_blocking_evaluator_calls_on_phase_too() -> None:
    seen: list[str] = []
    with (
        FakeBackend(_script(), job_id=JOB) as fake,
        create_evaluator(
            **FIELDS, backend=fake, on_phase=lambda ctx: seen.append(str(ctx.phase))
        ) as evaluator,
    ):
        assert evaluator.wait().status == "completed"
    assert seen == ["queued", "unschedulable", "pulling"]


def test_on_phase_given_twice_or_an_unknown_callback_is_refused() -> None:
    with pytest.raises(ValueError, match="on_phase given both"):
        create_async_evaluator(**FIELDS, on_phase=print, callbacks={"onPhase": print})
    with pytest.raises(ValueError, match="given twice"):
        create_async_evaluator(**FIELDS, callbacks={"on_phase": print, "onPhase": print})
    with pytest.raises(ValueError, match="unknown callback onLog"):
        create_async_evaluator(**FIELDS, callbacks={"onLog": print})
