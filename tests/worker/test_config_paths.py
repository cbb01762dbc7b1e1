"""Config paths no other test covers: QLoRA (``lora.loadIn4bit``, bitsandbytes nf4) on CPU, and
an eval split (``datasetSplit`` + ``evalSteps``) whose loss shows up in ``training.log`` events.
In-process runs of the tiny model against the S3-protocol server on loopback."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.worker.helpers import (
    ROWS,
    RunDir,
    assert_completed,
    base_config,
    check_committed,
    of_type,
    run_inprocess,
    write_rows,
)

pytestmark = [pytest.mark.s3, pytest.mark.train]


def test_load_in_4bit_trains_on_cpu_with_bitsandbytes_nf4(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"]())
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)})
    config["lora"] = {**config["lora"], "loadIn4bit": True}

    assert run_inprocess(run_dir.env(config)) == 0, [
        getattr(e, "error", e.type) for e in run_dir.events()
    ]

    assert_completed(run_dir, max_steps=6, save_steps=3, rows=24)
    started = run_dir.events()[0].metadata
    assert started["device"] == "cpu"
    assert started["quantization"] == "bitsandbytes-nf4"  # the base model really is 4-bit


def test_dataset_split_logs_a_finite_eval_loss_at_the_eval_cadence(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](30))
    config = base_config(
        tiny_model_dir,
        {"type": "file", "path": str(path)},
        datasetSplit={"enabled": True, "testSize": 0.2},
        evalSteps=2,
    )

    assert run_inprocess(run_dir.env(config)) == 0, [
        getattr(e, "error", e.type) for e in run_dir.events()
    ]

    events = run_dir.events()
    assert events[-1].type == "training.completed"
    logs = of_type(events, "training.log")
    evals = [e for e in logs if e.eval_loss is not None]
    assert [e.step for e in evals] == [2, 4, 6]
    assert all(math.isfinite(e.eval_loss) and e.eval_loss > 0 for e in evals)
    # training losses still every step, and the eval entries carry no training loss
    assert [e.step for e in logs if e.loss is not None] == list(range(1, 7))
    assert all(e.loss is None for e in evals)
    for step in (3, 6):
        check_committed(run_dir, step)
