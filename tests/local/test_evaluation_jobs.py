"""Evaluation jobs behave as runs do on LocalBackend: adoption by key, a crash or a stuck worker
still ends the job (``evaluation.failed`` / ``evaluation.cancelled`` written post mortem).

The worker is the scripted fake (tests/local/fake_worker.py), so these run in seconds; the
real worker's evaluation is tests/local/test_evaluate.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_async_evaluator
from arkor_ops.evaluation import validate_evaluation_config
from tests.local.helpers import make_backend

pytestmark = pytest.mark.timeout(120)


def _fields(dataset: Path, **spec: Any) -> dict[str, Any]:
    evaluation = {"dataset": {"type": "file", "path": str(dataset)}, "metrics": ["loss"], **spec}
    return {"name": "Triage Eval", "model": "tiny", "evaluation": evaluation}


async def test_an_idempotency_key_adopts_the_evaluation_job(
    runs_dir: Path, dataset_file: Path
) -> None:
    backend = make_backend(runs_dir)
    config = validate_evaluation_config(_fields(dataset_file, maxSamples=3))
    first, second = await asyncio.gather(
        backend.submit_evaluation(config, idempotency_key="flow-run-7"),
        backend.submit_evaluation(config, idempotency_key="flow-run-7"),
    )
    assert first.id == second.id and first.id.startswith("triage-eval-")
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted([first.id, "storage"])
    evaluator = create_async_evaluator(
        **_fields(dataset_file, maxSamples=3), backend=backend, idempotency_key="flow-run-7"
    )
    result = await evaluator.wait()
    assert evaluator.job_id == first.id
    assert result.status == "completed" and result.metrics == {"loss": 0.5}
    assert (await backend.describe(first.id)).job.started_at is not None


async def test_a_worker_that_crashes_ends_the_evaluation_as_failed(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_CRASH_AT_STEP", "2")
    backend = make_backend(runs_dir)
    evaluator = create_async_evaluator(**_fields(dataset_file), backend=backend)
    result = await evaluator.wait()
    assert result.status == "failed"
    assert result.error is not None and "without reporting an outcome" in result.error
    assert "scripted crash" in result.error


async def test_cancelling_a_stuck_evaluation_ends_it_as_cancelled(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_IGNORE_SIGTERM", "1")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    backend = make_backend(runs_dir, cancel_timeout_seconds=1)
    progressed = asyncio.Event()
    evaluator = create_async_evaluator(
        **_fields(dataset_file, maxSamples=500),
        backend=backend,
        callbacks={"on_progress": lambda e: progressed.set()},
    )
    waiting = asyncio.create_task(evaluator.wait())
    await asyncio.wait_for(progressed.wait(), timeout=60)
    await evaluator.cancel()
    result = await asyncio.wait_for(waiting, timeout=60)
    assert result.status == "cancelled"
    assert (await backend.describe(str(evaluator.job_id))).job.status == "cancelled"


def test_the_blocking_evaluator_waits_and_says_when_nothing_is_committed(
    runs_dir: Path, dataset_file: Path
) -> None:
    from arkor_ops import BackendError, create_evaluator

    seen: list[int] = []
    evaluator = create_evaluator(
        **_fields(dataset_file, maxSamples=2, metrics=["json_valid", "exact_match"]),
        backend=make_backend(runs_dir),
        callbacks={"on_progress": lambda e: seen.append(e.done)},
    )
    result = evaluator.wait()
    assert result.status == "completed" and seen == [1, 2]
    assert result.metrics == {"json_valid": 0.5, "exact_match": 0.5}
    assert evaluator.start() == evaluator.job_id  # start() after wait() is the same job
    with pytest.raises(BackendError, match="no results committed"):
        evaluator.samples()  # the scripted worker commits no samples.jsonl


async def test_an_adapter_ref_to_nothing_is_refused_before_any_job(
    runs_dir: Path, dataset_file: Path
) -> None:
    from arkor_ops import CheckpointError

    backend = make_backend(runs_dir)
    for adapter, says in (
        ({"kind": "final", "jobId": "no-such-run"}, "adapter: no run 'no-such-run' here"),
        ({"uri": f"file://{runs_dir}/nothing/final"}, "adapter: nothing is committed at"),
    ):
        evaluator = create_async_evaluator(
            **_fields(dataset_file), adapter=adapter, backend=backend
        )
        with pytest.raises(CheckpointError, match=says):
            await evaluator.start()
        assert evaluator.job_id is None
    assert not runs_dir.exists() or [p.name for p in runs_dir.iterdir()] == ["storage"]
