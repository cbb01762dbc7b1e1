"""Evaluation jobs through LocalBackend: the real worker and sidecar as processes.

The tiny model is trained on the triage example with the real worker, then the base model and
the trained adapter are scored on the held-out rows (field_match, json_valid, loss) by the
evaluator API; the adapter's loss is lower, and its per-sample results read back. A bad config
is refused before any process starts; a cancel ends the job as ``cancelled``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import (
    ConfigError,
    EvaluationProgress,
    create_async_evaluator,
    create_async_trainer,
)
from arkor_ops.backends.local import LocalBackend, LocalSettings
from tests.local.helpers import REPO

pytestmark = [pytest.mark.train, pytest.mark.timeout(600)]

TRAIN_ROWS = REPO / "examples" / "triage" / "train.jsonl"
TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"
METRICS = ["field_match:category", "json_valid", "loss"]


def _backend(runs_dir: Path) -> LocalBackend:
    return LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))


def _evaluation(**extra: Any) -> dict[str, Any]:
    return {
        "dataset": {"type": "file", "path": str(TEST_ROWS)},
        "metrics": METRICS,
        "maxSamples": 6,
        "generation": {"maxNewTokens": 40},
        **extra,
    }


async def test_base_model_and_trained_adapter_scored_side_by_side(
    runs_dir: Path, tiny_model_dir: Path
) -> None:
    backend = _backend(runs_dir)
    trainer = create_async_trainer(
        name="tiny-triage",
        model=str(tiny_model_dir),
        dataset={"type": "file", "path": str(TRAIN_ROWS)},
        lora={"r": 8, "alpha": 16, "max_length": 512},
        max_steps=30,
        learning_rate=0.01,
        batch_size=2,
        train_on_responses_only=True,
        backend=backend,
    )
    trained = await trainer.wait()
    assert trained.job.status == "completed", trained.job.error

    results = {}
    progress: list[tuple[int, int]] = []
    for name, adapter in (("base", None), ("tuned", {"kind": "final", "jobId": trainer.job_id})):
        evaluator = create_async_evaluator(
            name=f"triage-{name}",
            model=str(tiny_model_dir),
            adapter=adapter,
            evaluation=_evaluation(),
            backend=backend,
            callbacks={
                "on_progress": lambda e: (
                    progress.append((e.done, e.total))
                    if isinstance(e, EvaluationProgress)
                    else None
                )
            },
        )
        result = await evaluator.wait()
        assert result.status == "completed", result.error
        assert list(result.metrics) == METRICS and result.samples == 6
        samples = await evaluator.samples()
        assert len(samples) == 6
        assert samples[0]["reference"].startswith('{"category": ')
        assert set(samples[0]["scores"]) == {"field_match:category", "json_valid"}
        hits = [s["scores"]["field_match:category"] for s in samples]
        assert result.metrics["field_match:category"] == pytest.approx(sum(hits) / 6)
        desc = await backend.describe(str(evaluator.job_id))
        assert desc.job.status == "completed" and desc.job.config["kind"] == "evaluation"
        results[name] = result
    assert progress[-1] == (6, 6)
    assert results["tuned"].metrics["loss"] < results["base"].metrics["loss"], results  # type: ignore[operator]


async def test_bad_input_is_refused_before_any_process_starts(runs_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        create_async_evaluator(
            name="bad",
            model="/models/tiny",
            evaluation=_evaluation(metrics=["loss", "field_match:"]),
            backend=_backend(runs_dir),
        )
    assert "evaluation.metrics[1]" in str(info.value)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


async def test_cancel_ends_an_evaluation_as_cancelled(runs_dir: Path, tiny_model_dir: Path) -> None:
    backend = _backend(runs_dir)
    started = asyncio.Event()
    evaluator = create_async_evaluator(
        name="triage-cancel",
        model=str(tiny_model_dir),
        evaluation=_evaluation(maxSamples=None, generation={"maxNewTokens": 256}),
        backend=backend,
        callbacks={"on_progress": lambda e: started.set()},
    )
    waiting = asyncio.create_task(evaluator.wait())
    await asyncio.wait_for(started.wait(), timeout=300)
    await evaluator.cancel()
    result = await asyncio.wait_for(waiting, timeout=120)
    assert result.status == "cancelled"
    assert result.samples is not None and result.samples < 40
