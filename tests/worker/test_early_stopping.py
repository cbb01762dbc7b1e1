"""Early stopping on the eval loss, through the real worker on the tiny model.

With a `min_delta` no loss can beat, the first evaluation is the best and every later one counts
against the patience: the run stops at the second evaluation after it, commits a checkpoint
there, ends `completed` with the reason and the best step (the committed checkpoint with the
lowest eval loss), and the listing marks that one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor_ops.checkpoints import describe_checkpoints
from arkor_ops.config import validate_config
from arkor_ops.errors import ConfigError
from arkor_ops.storage import open_storage
from tests.worker.helpers import ROWS, RunDir, base_config, of_type, run_inprocess, write_rows

pytestmark = [pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(300)]


def test_a_run_stops_when_the_eval_loss_stops_improving(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](32))
    config = base_config(
        tiny_model_dir,
        {"type": "file", "path": str(rows)},
        maxSteps=1000,
        saveSteps=1000,
        evalSteps=2,
        datasetSplit={"enabled": True, "testSize": 0.25},
        earlyStopping={"patience": 2, "minDelta": 10.0},
    )
    assert run_inprocess(run_dir.env(config)) == 0
    events = run_dir.events()
    completed = of_type(events, "training.completed")
    assert len(completed) == 1 and not of_type(events, "training.failed")
    metrics = completed[0].metrics
    assert metrics.total_steps == 6  # evaluations at 2 (best), 4 and 6 (patience spent)
    assert metrics.stopped_early is True
    assert "eval_loss did not improve" in metrics.stop_reason and "(step 2)" in metrics.stop_reason
    evals = {e.step: e.eval_loss for e in of_type(events, "training.log") if e.eval_loss}
    assert sorted(evals) == [2, 4, 6]

    # the first best and the stopping step were committed although save_steps is 1000; the best
    # checkpoint is the committed one with the lowest eval loss
    assert [e.step for e in of_type(events, "checkpoint.saved")] == [2, 6]
    best = min((evals[2], 2), (evals[6], 6))
    assert (metrics.best_step, metrics.best_eval_loss) == (best[1], best[0])
    payloads = [e.model_dump(mode="json", by_alias=True) for e in events]
    infos = describe_checkpoints(open_storage(run_dir.storage_uri), run_dir.layout(), payloads)
    assert [(c.kind, c.step, c.best) for c in infos] == [
        ("checkpoint", 2, best[1] == 2),
        ("checkpoint", 6, best[1] == 6),
        ("final", 6, False),
    ]


def test_early_stopping_without_an_eval_split_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config(
            {
                "name": "x",
                "model": "m",
                "dataset": {"type": "file", "path": "/d"},
                "earlyStopping": {"patience": 3},
            }
        )
    assert "early_stopping" in str(info.value) and "dataset_split.enabled" in str(info.value)
