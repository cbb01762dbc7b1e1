"""The sidecar's log tail wakes on each write (inotify), not on a polling timer.

With the polling interval and the safety-net check both an hour, every write still reaches the
tail while the test waits a few seconds: only a change notification can deliver it. An idle log
wakes nothing: over a second of silence the tail reads the file about once (its first read), where
a 10 ms poll would read it a hundred times. Where inotify cannot watch the log's folder (it does
not exist yet), the tail polls at ``poll_seconds`` instead, still sees the log, and starts
watching once the folder exists.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arkor_ops.events import TrainingLog, event_to_json
from arkor_ops.sidecar.tail import LogTail

pytestmark = pytest.mark.timeout(60)

HOUR = 3600.0


class _CountingTail(LogTail):
    """A tail that counts its reads of the file (each wake-up of the reader reads it once)."""

    reads = 0

    def poll(self, limit: int | None = None) -> bool:
        self.reads += 1
        return super().poll(limit)


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
    tail = LogTail(log, poll_seconds=HOUR, check_seconds=HOUR)
    assert await _follow(tail, [log] * 20) == list(range(1, 21))


async def test_the_log_created_after_the_tail_started_is_seen(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"  # the folder is watched; the file does not exist yet
    tail = LogTail(log, poll_seconds=HOUR, check_seconds=HOUR)
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


async def test_an_idle_log_wakes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    _append(log, 1)
    (tmp_path / "other.txt").write_text("")  # other files of the folder do not wake the tail
    tail = _CountingTail(log, poll_seconds=0.01, check_seconds=HOUR)
    runner = asyncio.create_task(tail.run())
    try:
        await asyncio.wait_for(tail.wait(0), timeout=10)
        before = tail.reads
        for _ in range(10):
            await asyncio.sleep(0.1)
            (tmp_path / "other.txt").write_text("x")
        idle = tail.reads - before  # a 10 ms poll would have read ~100 times
        pos = tail.offset
        _append(log, 2)  # and a write after the silence still arrives
        await asyncio.wait_for(tail.wait(pos), timeout=10)
        assert tail.last_id == 2
    finally:
        await tail.close()
        await runner
    assert idle == 0


async def test_the_tail_starts_watching_once_the_folder_exists(tmp_path: Path) -> None:
    log = tmp_path / "later" / "events.jsonl"
    tail = LogTail(log, poll_seconds=0.02, check_seconds=HOUR)
    runner = asyncio.create_task(tail.run())
    try:
        await asyncio.sleep(0.1)
        log.parent.mkdir()
        await asyncio.sleep(1.5)  # polling meanwhile; the watch is retried once a second
        tail.poll_seconds = HOUR  # from here on only inotify can deliver a write
        await asyncio.sleep(0.1)
        for n in (1, 2, 3):
            pos = tail.offset
            _append(log, n)
            await asyncio.wait_for(tail.wait(pos), timeout=10)
            assert tail.last_id == n
    finally:
        await tail.close()
        await runner
