"""Replaying a persisted event log, and job.phase frames."""

from __future__ import annotations

import json

from arkor_ops.backends.kubernetes.diagnostics import Diagnosis
from arkor_ops.backends.kubernetes.stream import phase_frame, replay_frames
from arkor_ops.events import parse_event


def log_bytes(*types: str) -> bytes:
    lines = [
        json.dumps({"id": i, "type": t, "jobId": "r", "timestamp": "t", "step": i})
        for i, t in enumerate(types, start=1)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_replay_resumes_after_last_event_id_and_ends() -> None:
    data = log_bytes("training.started", "training.log", "training.log", "training.completed")
    frames = replay_frames("r", data, "2", fallback=None, cancelled=False)
    assert [f.id for f in frames] == ["3", "4", None]
    assert [f.event for f in frames] == ["training.log", "training.completed", "end"]


def test_missing_terminal_event_is_synthesised() -> None:
    data = log_bytes("training.started")
    why = Diagnosis("failed", "DeadlineExceeded", "Job was active longer than specified deadline")
    frames = replay_frames("r", data, None, fallback=why, cancelled=False)
    assert [f.event for f in frames] == ["training.started", "training.failed", "end"]
    failed = parse_event(frames[1].data)
    assert failed is not None and "deadline" in getattr(failed, "error", "")
    assert frames[1].id is None
    frames = replay_frames("r", b"", None, fallback=None, cancelled=True)
    assert [f.event for f in frames] == ["training.cancelled", "end"]


def test_phase_frame_is_a_job_phase_event_without_id() -> None:
    frame = phase_frame("r", Diagnosis("unschedulable", "Unschedulable", "0/2 nodes", "hint"))
    assert frame.event == "job.phase" and frame.id is None
    event = parse_event(frame.data)
    assert event is not None and event.type == "job.phase"
    assert (event.phase, event.reason, event.message, event.hint) == (  # type: ignore[union-attr]
        "unschedulable",
        "Unschedulable",
        "0/2 nodes",
        "hint",
    )
