"""Many clients at once share one reader and see identical streams."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import TrainingCompleted, TrainingStarted
from tests.sidecar.helpers import JOB_ID, Sidecars, collect, ids, write_logs

pytestmark = pytest.mark.timeout(90)


async def test_50_concurrent_clients_get_identical_streams(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    writer.write(TrainingStarted(job_id=JOB_ID))
    write_logs(writer, 20)
    sc = sidecars.start(log_path, storage_uri)
    readers = [asyncio.create_task(collect(sc.stream_url, timeout=60)) for _ in range(50)]
    rng = random.Random(5)
    step = 21
    for _ in range(30):  # bursts and pauses while the clients are connecting and reading
        burst = rng.randint(1, 10)
        write_logs(writer, burst, start_step=step)
        step += burst
        await asyncio.sleep(rng.uniform(0, 0.03))
    writer.write(TrainingCompleted(job_id=JOB_ID))
    streams = await asyncio.gather(*readers)
    expected = list(range(1, writer.last_id + 1))
    first = [(f.id, f.event, f.data) for f in streams[0]]
    assert ids(streams[0]) == expected
    assert streams[0][-1].is_end
    for frames in streams[1:]:
        assert [(f.id, f.event, f.data) for f in frames] == first
