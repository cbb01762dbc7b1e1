"""Pod restarts are counted in the run's storage (real S3, moto): once a run has restarted more
often than ``ARKOR_MAX_RESTARTS`` allows, the next start fails it with exit 2 (``FailJob``)
instead of being retried for free by the Job's ``podFailurePolicy``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arkor_ops.storage import join_uri, open_storage
from tests.worker.helpers import ROWS, RunDir, base_config, run_inprocess, write_rows

pytestmark = [pytest.mark.s3]


def test_a_start_past_the_restart_limit_fails_the_run_naming_the_setting(
    tmp_path: Path, run_dir: RunDir
) -> None:
    # Each start gets past the counter and fails on its own (no model here), like a pod that
    # is evicted once it runs; what matters is how the next start is treated.
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](4))
    config = base_config(tmp_path / "no-model", {"type": "file", "path": str(rows)})
    run_dir.extra_env["ARKOR_MAX_RESTARTS"] = "2"
    for _ in range(3):  # the first start and 2 restarts
        run_inprocess(run_dir.env(config))
        assert "does not exist" in run_dir.events()[-1].error
        run_dir.event_log.unlink()

    code = run_inprocess(run_dir.env(config))

    assert code == 2
    (failed,) = run_dir.events()
    assert failed.type == "training.failed"
    assert "restarted 3 times" in failed.error
    assert "ARKOR_MAX_RESTARTS=2" in failed.error
    assert "ARKOR_K8S_MAX_POD_RESTARTS" in failed.error
    storage = open_storage(run_dir.storage_uri)
    starts = json.loads(storage.get_bytes(join_uri(run_dir.layout().root, "attempts.json")))
    assert len(starts["starts"]) == 4


def test_local_runs_count_nothing(tmp_path: Path, run_dir: RunDir) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](4))
    config = base_config(tmp_path / "no-model", {"type": "file", "path": str(rows)})
    for _ in range(4):  # no ARKOR_MAX_RESTARTS: however often it starts, none is refused
        run_inprocess(run_dir.env(config))
        assert "does not exist" in run_dir.events()[-1].error
        run_dir.event_log.unlink()
