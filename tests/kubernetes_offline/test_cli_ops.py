"""The operator commands' pure parts: age, event rendering, the list table, parsing."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from arkor_ops.backends.base import JobDescription, TrainingJob
from arkor_ops.cli import build_parser
from arkor_ops.cli.ops import age, jobs_table, render


def test_age() -> None:
    now = datetime(2026, 1, 2, 0, 0, 0, tzinfo=UTC)
    assert age("2026-01-01T23:59:18Z", now) == "42s"
    assert age("2026-01-01T23:55:00Z", now) == "5m"
    assert age("2026-01-01T21:00:00Z", now) == "3h"
    assert age("2025-12-31T00:00:00Z", now) == "2d"
    assert age(None) == "-" and age("garbage") == "-"


def test_render_events() -> None:
    ts = "2026-01-01T12:00:01.000Z"
    assert render({"type": "training.log", "timestamp": ts, "step": 3, "loss": 1.23456}) == (
        "12:00:01 step 3  loss 1.235"
    )
    phase = {
        "type": "job.phase",
        "timestamp": ts,
        "phase": "unschedulable",
        "message": "0/2 nodes are available",
        "hint": "check GPU type",
    }
    assert (
        render(phase) == "12:00:01 [unschedulable] 0/2 nodes are available (hint: check GPU type)"
    )
    done = {"type": "training.completed", "timestamp": ts, "artifacts": [{"uri": "s3://b/r/final"}]}
    assert render(done) == "12:00:01 completed: s3://b/r/final"
    assert render({"type": "training.failed", "timestamp": ts, "error": "boom"}).endswith(
        "FAILED: boom"
    )
    assert render({"type": "other", "timestamp": ts}) == "12:00:01 other"
    resumed = {"type": "training.resumed", "timestamp": ts, "step": 30, "attempt": 2, "reason": "x"}
    assert render(resumed) == "12:00:01 resumed from step 30 (attempt 2): x"


def test_jobs_table() -> None:
    job = TrainingJob(id="run-1-abcd", name="Run 1", status="running", created_at=None)
    table = jobs_table([JobDescription(job=job, step=7, loss=0.5, phase="running")])
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "run-1-abcd" in text and "running" in text and "0.5000" in text and " 7 " in text


def test_commands_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(["logs", "run-1", "-f", "--backend", "kubernetes", "-n", "ml"])
    assert (args.job, args.follow, args.backend, args.namespace) == (
        "run-1",
        True,
        "kubernetes",
        "ml",
    )
    for argv in (["list"], ["status", "j"], ["cancel", "j"]):
        assert callable(parser.parse_args(argv).func)
