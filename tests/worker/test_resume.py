"""Resume and cancel, through real worker processes and real signals.

One story, four worker processes: SIGKILL after the second committed checkpoint; restart
resumes from the newest committed one (never from one without a manifest) and is then
cancelled with SIGTERM; a changed config is refused; ``resume=force`` resumes anyway.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.storage import MANIFEST_NAME, join_uri, open_storage
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


def _since_last_start(events: list[Any]) -> list[Any]:
    """From the last ``training.started`` or ``training.resumed`` (a later attempt's start)."""
    starts = [i for i, e in enumerate(events) if e.type in ("training.started", "training.resumed")]
    return events[starts[-1] :] if starts else []


def test_kill_resume_cancel_refuse_and_force(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](32))
    config = base_config(
        tiny_model_dir, {"type": "file", "path": str(path)}, maxSteps=100_000, saveSteps=20
    )
    run_dir.extra_env = {"ARKOR_CANCEL_GRACE_SECONDS": str(GRACE_SECONDS)}
    storage = open_storage(run_dir.storage_uri)
    layout = run_dir.layout()

    # 1. SIGKILL after the second committed checkpoint.
    proc = start_worker(run_dir.env(config))
    wait_for(run_dir, lambda ev: len(of_type(ev, "checkpoint.saved")) >= 2, proc, timeout=180)
    proc.kill()
    proc.wait(timeout=30)
    newest = committed_steps(storage, layout)[0]
    assert newest >= 40
    check_committed(run_dir, newest)

    # A checkpoint left without a manifest (a crash mid-upload) must never be used.
    bogus = layout.checkpoint(newest + 55)
    src = layout.checkpoint(newest)
    for uri in storage.list(src + "/"):
        name = uri[len(src) + 1 :]
        if name != MANIFEST_NAME:
            storage.put_bytes(join_uri(bogus, name), storage.get_bytes(uri))

    # 2. Restart: resumes from the newest committed step, the step count continues; SIGTERM.
    proc = start_worker(run_dir.env(config))
    events = wait_for(
        run_dir,
        lambda ev: (
            len(of_type(ev, "training.resumed")) == 1
            and any(e.type == "training.log" and e.step > newest + 3 for e in _since_last_start(ev))
        ),
        proc,
        timeout=180,
    )
    # One start in the log; the restart reports itself as a resume from the committed step.
    assert len(of_type(events, "training.started")) == 1
    resumed = _since_last_start(events)
    assert resumed[0].type == "training.resumed" and resumed[0].step == newest
    assert resumed[0].metadata["resumedFromStep"] == newest
    assert next(e.step for e in resumed if e.type == "training.log") == newest + 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=GRACE_SECONDS + 10) == 0  # a clean stop, not a kill
    last = run_dir.events()[-1]
    assert last.type == "training.cancelled"
    assert last.step is not None and last.step > newest
    assert last.checkpoint is not None and last.checkpoint.step == last.step
    check_committed(run_dir, last.step)
    ids = [e.id for e in run_dir.events()]
    assert ids == list(range(1, len(ids) + 1))
    cancel_step = last.step

    # 3. A changed config is refused (exit 2), naming what changed.
    changed = {**config, "learningRate": 0.001}
    proc = start_worker(run_dir.env(changed))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr[-2000:]
    failed = run_dir.events()[-1]
    assert failed.type == "training.failed"
    assert f"refusing to resume from checkpoint step {cancel_step}" in failed.error
    assert "learningRate (0.005 -> 0.001)" in failed.error

    # 4. resume=force resumes anyway and finishes.
    forced = {**changed, "resume": "force", "maxSteps": cancel_step + 4, "saveSteps": 2}
    proc = start_worker(run_dir.env(forced))
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr[-3000:]
    final = _since_last_start(run_dir.events())
    assert final[0].metadata["resumedFromStep"] == cancel_step
    assert next(e.step for e in final if e.type == "training.log") == cancel_step + 1
    assert final[-1].type == "training.completed"
    assert final[-1].metrics.total_steps == cancel_step + 4
    assert not storage.exists(join_uri(bogus, MANIFEST_NAME))
