"""A burst of events reaches the client complete and in order, in a few large writes.

In process, the tail follows a log that one write grows by thousands of lines: the stream hands
them out in batches (one chunk of many frames, not one per event). Through the real sidecar, a
burst written while a client follows arrives complete, in order, then ``end``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import TrainingCompleted, TrainingLog, event_to_json
from arkor_ops.sidecar.app import stream_events
from arkor_ops.sidecar.tail import MAX_BATCH, LogTail
from tests.sidecar.helpers import JOB_ID, Sidecars, collect, ids, write_logs

pytestmark = pytest.mark.timeout(60)

BURST = 5_000


def _burst(first: int, count: int) -> str:
    lines = [
        event_to_json(TrainingLog(id=i, job_id=JOB_ID, step=i)) for i in range(first, first + count)
    ]
    return "\n".join(lines) + "\n"


async def test_a_burst_is_sent_in_batches_complete_and_in_order(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text(_burst(1, 1))
    tail = LogTail(log, check_seconds=3600)
    runner = asyncio.create_task(tail.run())
    chunks: list[bytes] = []

    async def client() -> None:
        async for chunk in stream_events(tail, 0):
            chunks.append(chunk)

    reader = asyncio.create_task(client())
    try:
        await asyncio.wait_for(tail.wait(0), timeout=10)
        while not chunks:
            await asyncio.sleep(0.01)
        with log.open("a") as fh:  # one write: the tail reads it after one notification
            fh.write(_burst(2, BURST))
            fh.write(event_to_json(TrainingCompleted(id=BURST + 2, job_id=JOB_ID)) + "\n")
        await asyncio.wait_for(reader, timeout=30)
    finally:
        await tail.close()
        await runner
    frames = b"".join(chunks).decode().split("\n\n")
    got = [int(line[4:]) for f in frames for line in f.splitlines() if line.startswith("id: ")]
    assert got == list(range(1, BURST + 3))
    assert frames[-2] == "event: end\ndata: "  # then the end frame
    # a few large writes (a step of the backlog, at most MAX_BATCH frames each), not one per event
    assert len(chunks) <= BURST // 100
    assert max(chunk.count(b"\n\n") for chunk in chunks) <= MAX_BATCH


async def test_a_burst_through_the_sidecar_arrives_complete_and_in_order(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    write_logs(writer, 1)
    sc = sidecars.start(log_path, storage_uri, ARKOR_POLL_SECONDS="5")
    reader = asyncio.create_task(collect(sc.stream_url, timeout=40))
    await asyncio.sleep(0.3)
    write_logs(writer, BURST, start_step=2)
    writer.write(TrainingCompleted(job_id=JOB_ID))
    frames = await reader
    assert ids(frames) == list(range(1, BURST + 3))
    assert frames[-1].is_end
