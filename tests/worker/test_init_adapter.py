"""A run started from another run's adapter (``init_adapter``), through the real worker.

A parent run trains the tiny model; a child started from the parent's final adapter begins at
those weights (its first loss is the parent's last, not the base model's); a child started from
a checkpoint records where it came from. A ref to nothing, to another base model or to another
LoRA rank fails before the model is loaded, exit 2, naming what to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arkor_ops.worker.errors import EXIT_OK, EXIT_PERMANENT
from tests.worker.helpers import ROWS, RunDir, base_config, of_type, run_inprocess, write_rows

pytestmark = [pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]


def _losses(events: list[Any]) -> list[float]:
    return [e.loss for e in of_type(events, "training.log") if e.loss is not None]


def _parent(
    tmp_path: Path, s3_prefix: str, model: Path, steps: int
) -> tuple[RunDir, dict[str, Any]]:
    """A finished parent run at a high learning rate, with a checkpoint half way."""
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](32))
    config = base_config(
        model,
        {"type": "file", "path": str(rows)},
        maxSteps=steps,
        saveSteps=max(steps // 2, 1),
        learningRate=0.02,
    )
    run = RunDir(tmp_path / "parent", "parent-1", s3_prefix)
    assert run_inprocess(run.env(config)) == EXIT_OK
    return run, config


def _child(tmp_path: Path, parent: RunDir, name: str) -> RunDir:
    return RunDir(tmp_path / name, name, parent.storage_uri)


def test_a_child_begins_at_the_parents_weights(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    run, config = _parent(tmp_path, s3_prefix, tiny_model_dir, steps=40)
    parent_losses = _losses(run.events())
    base_first, parent_last = parent_losses[0], parent_losses[-1]
    assert parent_last < base_first - 0.4, parent_losses  # the parent did learn something

    child = _child(tmp_path, run, "child-final")
    ref = {"kind": "final", "jobId": run.job_id}
    assert run_inprocess(child.env({**config, "maxSteps": 2, "initAdapter": ref})) == EXIT_OK
    first = _losses(child.events())[0]
    # from the parent's adapter: near the parent's last loss, far from the base model's
    assert abs(first - parent_last) < abs(first - base_first) / 3, (first, parent_losses)
    started = of_type(child.events(), "training.started")[0]
    assert started.metadata["initAdapter"] == run.layout().final
    assert started.metadata["initAdapterStep"] == 40

    checkpoint = _child(tmp_path, run, "child-step")
    ref = {"jobId": run.job_id, "step": 20}
    assert run_inprocess(checkpoint.env({**config, "maxSteps": 2, "initAdapter": ref})) == EXIT_OK
    started = of_type(checkpoint.events(), "training.started")[0]
    assert started.metadata["initAdapter"] == run.layout().checkpoint(20)
    # a fresh run: its own steps count from 1
    assert of_type(checkpoint.events(), "training.log")[0].step == 1


def _refused(child: RunDir, config: dict[str, Any]) -> str:
    assert run_inprocess(child.env(config)) == EXIT_PERMANENT
    failed = of_type(child.events(), "training.failed")
    assert len(failed) == 1 and not of_type(child.events(), "training.log")
    return str(failed[0].error)


def test_refs_that_cannot_fit_fail_before_training(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    run, config = _parent(tmp_path, s3_prefix, tiny_model_dir, steps=2)
    ref = {"jobId": run.job_id, "step": 5}
    error = _refused(_child(tmp_path, run, "no-such"), {**config, "initAdapter": ref})
    assert "nothing is committed at" in error and "step-00000005" in error
    assert "arkor-ops checkpoints" in error

    other = tmp_path / "other-model"
    other.symlink_to(tiny_model_dir)  # the same weights under another name: another base model
    ref = {"kind": "final", "jobId": run.job_id}
    error = _refused(
        _child(tmp_path, run, "other-base"), {**config, "model": str(other), "initAdapter": ref}
    )
    assert f"trained on base model {str(tiny_model_dir)!r}" in error
    assert f"set model: {str(tiny_model_dir)!r}" in error

    lora = {**config["lora"], "r": 4}
    error = _refused(
        _child(tmp_path, run, "other-rank"), {**config, "lora": lora, "initAdapter": ref}
    )
    assert "has LoRA rank 8, this run has lora.r=4" in error and "set lora.r: 8" in error
