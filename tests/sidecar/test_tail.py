"""The log tail serves any resume point of a long log exactly once, in order, from memory or disk.

In process (no server): the sidecar's :class:`LogTail` and :func:`stream_events` over a log
with ids that jump (a later attempt after a pod loss numbers from 1e9), read with a small
in-memory window, so resumes far behind go through the file and its binary search.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from arkor_ops.events import TrainingCompleted, TrainingLog, event_to_json
from arkor_ops.sidecar.app import stream_events
from arkor_ops.sidecar.tail import LogTail

FIRST = list(range(1, 2_001))
SECOND = list(range(1_000_000_001, 1_000_003_001))
IDS = [*FIRST, *SECOND, SECOND[-1] + 1]


async def _ids_after(tail: LogTail, after: int) -> list[int]:
    out = []
    async for chunk in stream_events(tail, after):
        for frame in chunk.decode().split("\n\n"):
            for line in frame.splitlines():
                if line.startswith("id: "):
                    out.append(int(line[4:]))
    return out


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tail") / "events.jsonl"
    lines = [event_to_json(TrainingLog(id=i, job_id="j", step=n)) for n, i in enumerate(IDS[:-1])]
    lines.append(event_to_json(TrainingCompleted(id=IDS[-1], job_id="j")))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "after", [0, 1, 17, 1_999, 2_000, 2_001, 999_999_999, 1_000_001_500, IDS[-2], IDS[-1]]
)
def test_every_event_after_the_resume_point_once_in_order(long_log: Path, after: int) -> None:
    tail = LogTail(long_log, recent=16)
    tail.poll()
    assert len(tail.recent) < 40  # only a window is held
    got = asyncio.run(_ids_after(tail, after))
    assert got == [i for i in IDS if i > after]
