"""An evaluation job's log through the real sidecar: same framing, `end` after its terminal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import (
    EvaluationCompleted,
    EvaluationProgress,
    EvaluationStarted,
    parse_event,
)
from arkor_ops.storage import RunLayout, open_storage
from tests.sidecar.helpers import JOB_ID, Sidecars, collect, ids

pytestmark = pytest.mark.timeout(60)


async def test_an_evaluation_stream_ends_after_evaluation_completed(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    writer.write(EvaluationStarted(job_id=JOB_ID, metadata={"samples": 2}))
    sc = sidecars.start(log_path, storage_uri)
    reader = asyncio.create_task(collect(sc.stream_url))
    await asyncio.sleep(0.3)
    writer.write(EvaluationProgress(job_id=JOB_ID, done=1, total=2))
    writer.write(EvaluationProgress(job_id=JOB_ID, done=2, total=2))
    uri = RunLayout(storage_uri, JOB_ID).evaluation
    metrics = {"loss": 1.5, "json_valid": 0.5, "field_match:category": None}
    writer.write(EvaluationCompleted(job_id=JOB_ID, metrics=metrics, samples=2, uri=uri))
    frames = await reader
    assert ids(frames) == [1, 2, 3, 4]
    assert [f.event for f in frames][-2:] == ["evaluation.completed", "end"]
    done = parse_event(frames[-2].data)
    assert isinstance(done, EvaluationCompleted) and done.terminal
    assert done.metrics == metrics and done.uri == uri
    assert json.loads(frames[1].data)["total"] == 2
    persisted = open_storage(storage_uri).get_bytes(RunLayout(storage_uri, JOB_ID).events)
    assert persisted == log_path.read_bytes()
