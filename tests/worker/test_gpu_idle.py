"""GPU-idle time as a reported figure: `training.completed.metrics.gpuIdle`, through the real
worker process with its model and dataset in S3 (so both fetches show) and the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor_ops.storage import join_uri, open_storage
from arkor_ops.worker.idle import CAUSES
from tests.worker.helpers import ROWS, RunDir, base_config, of_type, start_worker, write_rows

pytestmark = [pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(300)]


def test_completed_metrics_split_the_idle_time_by_cause(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    model_uri = join_uri(run_dir.storage_uri, "models", "tiny")
    open_storage(model_uri).upload_dir(model_uri, tiny_model_dir)
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](16))
    # the dataset in S3 too, so its fetch takes measurable time (a local file of 16 rows is read
    # in well under the figures' millisecond and rounds to 0.0)
    data_uri = join_uri(run_dir.storage_uri, "data", "rows.jsonl")
    open_storage(data_uri).put_bytes(data_uri, rows.read_bytes())
    config = {**base_config(tiny_model_dir, {"type": "s3", "uri": data_uri}, maxSteps=3)}
    config["model"] = model_uri
    proc = start_worker(run_dir.env(config))
    _, err = proc.communicate(timeout=280)
    assert proc.returncode == 0, err[-3000:]
    (completed,) = of_type(run_dir.events(), "training.completed")
    idle = completed.metrics.gpu_idle
    assert set(idle) == {"beforeFirstStep", *CAUSES, "other", "afterLastStep"}
    # each cause that this run has took time; nothing to fetch for a fresh run's checkpoint
    for cause in ("modelFetch", "dataFetch", "modelLoad", "tokenize", "other"):
        assert idle[cause] > 0, (cause, idle)
    assert idle["checkpointFetch"] >= 0
    parts = sum(idle[c] for c in (*CAUSES, "other"))
    assert parts == pytest.approx(idle["beforeFirstStep"], abs=0.01)
    assert idle["afterLastStep"] > 0  # the final adapter's save and upload
    started = of_type(run_dir.events(), "training.started")[0]
    assert started.metadata["modelSource"] == "downloaded from S3"
