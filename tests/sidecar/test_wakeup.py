"""The sidecar's log tail wakes on each write (inotify), not on a polling timer.

With a polling interval of an hour, every write still reaches the tail while the test waits a
few seconds: only a change notification can deliver it. Where inotify cannot watch the log's
folder (it does not exist yet), the tail polls at ``poll_seconds`` instead and still sees it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arkor_ops.events import TrainingLog, event_to_json
from arkor_ops.sidecar.tail import LogTail

pytestmark = pytest.mark.timeout(60)


def _append(path: Path, event_id: int) -> None:
    with path.open("a") as fh:
        fh.write(event_to_json(TrainingLog(id=event_id, job_id="j", step=event_id)) + "\n")


async def _follow(tail: LogTail, writes: list[Path]) -> list[int]:
    seen: list[int] = []
    runner = asyncio.create_task(tail.run())
    try:
        for n, path in enumerate(writes, start=1):
            pos = tail.offset
            await asyncio.sleep(0.05)
            _append(path, n)
            await asyncio.wait_for(tail.wait(pos), timeout=10)
            seen.append(tail.last_id)
    finally:
        await tail.close()
        await runner
    return seen


async def test_each_write_wakes_the_tail_with_an_hour_between_polls(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.touch()
    tail = LogTail(log, poll_seconds=3600)
    assert await _follow(tail, [log] * 20) == list(range(1, 21))


async def test_the_log_created_after_the_tail_started_is_seen(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"  # the folder is watched; the file does not exist yet
    tail = LogTail(log, poll_seconds=3600)
    assert await _follow(tail, [log]) == [1]


async def test_without_inotify_the_tail_polls(tmp_path: Path) -> None:
    log = tmp_path / "later" / "events.jsonl"  # no folder to watch yet: polling
    tail = LogTail(log, poll_seconds=0.02)
    runner = asyncio.create_task(tail.run())
    await asyncio.sleep(0.1)
    log.parent.mkdir()
    _append(log, 1)
    await asyncio.wait_for(tail.wait(0), timeout=10)
    assert tail.last_id == 1
    await tail.close()
    await runner
