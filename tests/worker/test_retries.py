"""A retryable failure is final only in the last attempt the Job allows (``ARKOR_MAX_ATTEMPTS``).

Two pods of one run, as Kubernetes runs them after an exit 1: each its own event log, the
second seeded from the log the first pod's sidecar persisted. Storage fails in both attempts
(``ARKOR_TEST_FAULT_STORAGE_ATTEMPTS``, the test hook), before any training, so this is fast.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor_ops.storage import open_storage
from tests.worker.helpers import ROWS, RunDir, base_config, run_inprocess, write_rows

pytestmark = [pytest.mark.s3]


def test_a_retryable_failure_is_a_retrying_phase_until_the_last_attempt(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](8))
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)})
    env = {"ARKOR_MAX_ATTEMPTS": "2", "ARKOR_TEST_FAULT_STORAGE_ATTEMPTS": "1,2"}
    storage = open_storage(s3_prefix)

    first = RunDir(tmp_path / "pod-1", "job-retry", s3_prefix, extra_env=env)
    assert run_inprocess(first.env(config)) == 1
    events = first.events()
    assert [(e.type, getattr(e, "phase", None)) for e in events] == [("job.phase", "retrying")]
    assert not any(e.terminal for e in events)  # the Job retries: the stream must not end
    assert "ARKOR_TEST_FAULT_STORAGE_ATTEMPTS" in (events[0].message or "")
    assert "failure 1 of at most 2" in (events[0].hint or "")
    storage.put_file(first.layout().events, first.event_log)  # its sidecar, on the way out

    second = RunDir(tmp_path / "pod-2", "job-retry", s3_prefix, extra_env=env)
    assert run_inprocess(second.env(config)) == 1
    events = second.events()
    assert [e.type for e in events] == ["job.phase", "training.failed"]
    assert "in attempt 2" in events[-1].error
    assert [e.id for e in events] == [1, 2]  # the first pod ended cleanly: ids go on densely


def test_a_local_run_fails_at_once(tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path) -> None:
    """No ARKOR_MAX_ATTEMPTS (local runs): the one attempt is the last."""
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](8))
    run_dir.extra_env = {"ARKOR_TEST_FAULT_STORAGE_ATTEMPTS": "1"}
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)})
    assert run_inprocess(run_dir.env(config)) == 1
    assert [e.type for e in run_dir.events()] == ["training.failed"]
