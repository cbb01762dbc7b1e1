"""SIGTERM with ``ARKOR_CANCEL_MARKER`` set: a disruption without the marker file, a cancel with it.

One story, as on Kubernetes: a pod is evicted (SIGTERM, no marker): the worker checkpoints,
writes no terminal event and exits 1. The sidecar persists the log; the replacement pod (an
empty local log, a fresh marker path) seeds its log from storage and resumes from the
checkpoint; then the user cancels (the sidecar leaves the marker, then SIGTERM):
``training.cancelled``, exit 0. Without ``ARKOR_CANCEL_MARKER`` (local runs) every SIGTERM is a
cancel; ``test_resume.py`` covers that.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from arkor_ops.storage import open_storage
from arkor_ops.worker.checkpoints import committed_steps
from tests.worker.helpers import (
    GRACE_SECONDS,
    ROWS,
    RunDir,
    base_config,
    check_committed,
    of_type,
    start_worker,
    wait_for,
    write_rows,
)

pytestmark = [pytest.mark.s3, pytest.mark.train]


def _pod(tmp_path: Path, name: str, storage_uri: str) -> tuple[RunDir, Path]:
    """A pod's private files (event log, work dir) and its cancel marker path (not created)."""
    pod = RunDir(tmp_path / name, "job-1", storage_uri)
    marker = pod.root / "cancel-requested"
    pod.extra_env = {
        "ARKOR_CANCEL_GRACE_SECONDS": str(GRACE_SECONDS),
        "ARKOR_CANCEL_MARKER": str(marker),
    }
    return pod, marker


def test_sigterm_without_marker_is_a_disruption_and_with_it_a_cancel(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](32))
    config = base_config(
        tiny_model_dir, {"type": "file", "path": str(path)}, maxSteps=100_000, saveSteps=1000
    )
    storage = open_storage(s3_prefix)

    # 1. Evicted: SIGTERM without the marker file.
    first, marker = _pod(tmp_path, "pod-1", s3_prefix)
    proc = start_worker(first.env(config))
    wait_for(first, lambda ev: any(e.type == "training.log" for e in ev), proc, timeout=180)
    assert not marker.exists()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=GRACE_SECONDS + 10)
    assert proc.returncode == 1, stderr[-3000:]
    assert "a disruption" in stderr and "no terminal event" in stderr, stderr[-3000:]
    events = first.events()
    assert not [e for e in events if e.terminal], [e.type for e in events]
    stopped = max(e.step for e in of_type(events, "training.log"))
    saved = [e.step for e in of_type(events, "checkpoint.saved")]
    assert saved == [stopped], (saved, stopped)  # checkpointed at the step it stopped on
    assert committed_steps(storage, first.layout())[0] == stopped
    check_committed(first, stopped)

    # The dying pod's sidecar persists the log on SIGTERM.
    storage.put_bytes(first.layout().events, first.event_log.read_bytes())

    # 2. The replacement pod resumes (its log seeded from storage); then a real cancel.
    second, marker = _pod(tmp_path, "pod-2", s3_prefix)
    proc = start_worker(second.env(config))
    events = wait_for(
        second,
        lambda ev: any(e.type == "training.log" and e.step > stopped + 1 for e in ev),
        proc,
        timeout=180,
    )
    assert len(of_type(events, "training.started")) == 1
    (resumed,) = of_type(events, "training.resumed")
    assert (resumed.step, resumed.attempt) == (stopped, 2)
    assert "disrupted" in resumed.reason
    assert resumed.metadata["resumedFromStep"] == stopped
    marker.touch()  # what the sidecar does on POST /v1/jobs/{job}/cancel
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=GRACE_SECONDS + 10)
    assert proc.returncode == 0, stderr[-3000:]
    assert "cancel marker" in stderr and "is present" in stderr, stderr[-3000:]
    events = second.events()
    last = events[-1]
    assert last.type == "training.cancelled"
    assert last.step is not None and last.step > stopped
    assert last.checkpoint is not None and last.checkpoint.step == last.step
    check_committed(second, last.step)
    assert len([e for e in events if e.terminal]) == 1
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1))  # one monotonic log across both pods
