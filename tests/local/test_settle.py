"""Several followers of one run whose worker died silently: exactly one terminal event.

The log is long (tens of thousands of events), as a real run's is after a while: appending to
it takes the follower that settles the run long enough that the others, which noticed the dead
worker at about the same time, are still deciding whether to write too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from arkor_ops.config import validate_config
from arkor_ops.eventlog import iter_log_lines
from arkor_ops.events import TERMINAL_TYPES, Frame
from tests.local.helpers import config_fields, make_backend

pytestmark = pytest.mark.timeout(120)

LONG_LOG_BYTES = 3 << 20


async def _follow(runs_dir: Path, job_id: str) -> list[Frame]:
    """Follow to the end, reconnecting after the last id as ``wait()`` does."""
    backend = make_backend(runs_dir)  # its own backend, as another process would have
    out: list[Frame] = []
    last: str | None = None
    async with asyncio.timeout(60):
        while not (out and out[-1].is_end):
            async for frame in backend.events(job_id, last):
                if frame.is_ping:
                    continue
                out.append(frame)
                if frame.id is not None and not frame.is_end:
                    last = frame.id
    return out


async def test_two_followers_of_a_killed_worker_write_one_terminal_event(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0")
    backend = make_backend(runs_dir)
    config = validate_config(config_fields(dataset_file, max_steps=500_000, save_steps=500_000))
    job = await backend.submit(config)
    log = runs_dir / job.id / "events.jsonl"
    for _ in range(600):
        if log.exists() and log.stat().st_size > LONG_LOG_BYTES:
            break
        await asyncio.sleep(0.05)
    state = json.loads((runs_dir / job.id / "state.json").read_text())
    os.killpg(state["worker"]["pid"], signal.SIGKILL)  # no terminal event from the worker
    for _ in range(100):
        if backend._run(job.id).exit_code("worker") is not None:  # reaped: it is gone
            break
        await asyncio.sleep(0.05)

    followers = await asyncio.gather(*(_follow(runs_dir, job.id) for _ in range(3)))

    events = list(iter_log_lines(log.read_bytes()))
    terminal = [e for e in events if e["type"] in TERMINAL_TYPES]
    assert [e["type"] for e in terminal] == ["training.failed"], terminal
    for frames in followers:
        assert [f.event for f in frames][-2:] == ["training.failed", "end"]
        assert frames[-2].id == str(terminal[0]["id"])
    assert (await backend.describe(job.id)).job.status == "failed"
