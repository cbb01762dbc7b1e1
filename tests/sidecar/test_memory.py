"""The sidecar's memory is bounded by its clients, not by the length of the run.

A run that logs for days writes a million events; the sidecar (limit 512 Mi) must serve and
persist them without holding them. Measured from outside, as the kubelet would: the process's
peak resident set (``VmHWM``) after a small log, then after replaying and persisting a log
hundreds of times larger.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from arkor_ops.events import TrainingCompleted, TrainingLog, event_to_json
from arkor_ops.storage import RunLayout, open_storage
from tests.sidecar.helpers import JOB_ID, SidecarProc, Sidecars

pytestmark = pytest.mark.timeout(300)

SMALL = 1_000
LARGE = 200_000


def _append(log: Path, first_id: int, count: int) -> None:
    """``count`` training.log lines as the trainer writes them (bulk, for speed)."""
    lines = []
    for i in range(first_id, first_id + count):
        event = TrainingLog(id=i, job_id=JOB_ID, step=i, loss=1.0 / i, learning_rate=2e-4)
        lines.append(event_to_json(event))
    with log.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def _replay_count(sc: SidecarProc, until_end: bool) -> int:
    """Stream from the start, counting training.log frames (raw bytes: a fast client)."""
    count, buf = 0, b""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client,
        client.stream("GET", sc.stream_url) as resp,
    ):
        assert resp.status_code == 200
        async for chunk in resp.aiter_bytes():
            *frames, buf = (buf + chunk).split(b"\n\n")
            for frame in frames:
                if b"\nevent: training.log\n" in frame:
                    count += 1
                elif b"event: end" in frame:
                    return count
            if not until_end and count >= SMALL:
                return count
    return count


async def test_memory_stays_bounded_while_serving_and_persisting_a_long_log(
    sidecars: Sidecars, log_path: Path, storage_uri: str
) -> None:
    log_path.parent.mkdir(parents=True)
    _append(log_path, 1, SMALL)
    sc = sidecars.start(log_path, storage_uri)
    assert await _replay_count(sc, until_end=False) == SMALL
    base = _peak_rss_kib(sc.proc.pid)

    _append(log_path, SMALL + 1, LARGE)
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(event_to_json(TrainingCompleted(id=SMALL + LARGE + 1, job_id=JOB_ID)) + "\n")
    size = log_path.stat().st_size
    assert await _replay_count(sc, until_end=True) == SMALL + LARGE
    persisted = Path(RunLayout(storage_uri, JOB_ID).events.removeprefix("file://"))
    for _ in range(600):
        if persisted.exists() and persisted.stat().st_size == size:
            break
        await asyncio.sleep(0.1)
    assert (
        open_storage(storage_uri).get_bytes(RunLayout(storage_uri, JOB_ID).events)[-200:]
        == (log_path.read_bytes()[-200:])
    )
    assert sc.health()["lastEventId"] == SMALL + LARGE + 1
    growth_bytes = (_peak_rss_kib(sc.proc.pid) - base) * 1024
    # Holding the events (or reading the file into memory to persist it) costs more than the
    # log's size; a bounded sidecar grows by a few batches.
    assert growth_bytes < size / 4, (growth_bytes, size)
