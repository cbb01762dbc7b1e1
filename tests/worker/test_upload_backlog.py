"""Uploads that fall behind training: the checkpoint that gives way is an event, not a log line.

The worker's uploads are held (``ARKOR_TEST_HOLD_UPLOADS``) while training saves checkpoint
after checkpoint, as on a slow link to storage; then they are let go. The user's event log says
which step was not uploaded and why (``checkpoint.skipped``), that step is never committed, the
newer ones are, and the run completes without training ever waiting.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor_ops.events import CheckpointSkipped
from arkor_ops.storage import open_storage
from arkor_ops.worker.checkpoints import MAX_BACKLOG, committed_steps
from tests.worker.helpers import (
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


def test_a_checkpoint_skipped_because_uploads_are_behind_is_an_event(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](32))
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)}, maxSteps=18)
    hold = tmp_path / "let-uploads-go"
    run = RunDir(tmp_path / "run", "job-1", s3_prefix, {"ARKOR_TEST_HOLD_UPLOADS": str(hold)})
    proc = start_worker(run.env(config))

    # Step 3's upload is held; steps 6, 9, 12 and 15 are saved and queued behind it meanwhile.
    events = wait_for(
        run,
        lambda ev: any(e.type == "training.log" and e.step >= 16 for e in ev),
        proc,
        timeout=300,
    )
    assert not of_type(events, "checkpoint.saved")  # training went on without waiting
    hold.touch()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]

    events = run.events()
    assert events[-1].type == "training.completed"
    skipped = of_type(events, "checkpoint.skipped")
    assert skipped, [e.type for e in events]
    assert all(isinstance(e, CheckpointSkipped) for e in skipped)
    # The oldest queued checkpoint gives way first, with more than the backlog bound behind it.
    assert skipped[0].step == 6
    assert skipped[0].backlog >= MAX_BACKLOG
    assert "behind training" in skipped[0].reason
    saved = [e.step for e in of_type(events, "checkpoint.saved")]
    skipped_steps = [e.step for e in skipped]
    assert 3 in saved and 18 in saved  # the held one and the newest are committed
    assert sorted(saved + skipped_steps) == [3, 6, 9, 12, 15, 18]
    storage = open_storage(s3_prefix)
    assert sorted(committed_steps(storage, run.layout())) == saved
    for step in saved:
        check_committed(run, step)
    done = events[-1]
    kept = [a.step for a in done.artifacts if a.kind == "checkpoint"]
    assert kept == saved
