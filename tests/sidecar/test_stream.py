"""The stream endpoint, case by case: replay, follow, resume, keepalive, partial lines, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import TrainingCompleted, TrainingStarted
from arkor_ops.storage import RunLayout, open_storage
from tests.sidecar.helpers import JOB_ID, Sidecars, collect, ids, write_logs, write_run

pytestmark = pytest.mark.timeout(60)


async def test_replays_then_follows_and_ends_after_terminal(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    writer.write(TrainingStarted(job_id=JOB_ID))
    write_logs(writer, 2)
    sc = sidecars.start(log_path, storage_uri)
    reader = asyncio.create_task(collect(sc.stream_url))
    await asyncio.sleep(0.3)
    write_logs(writer, 3, start_step=3)
    writer.write(TrainingCompleted(job_id=JOB_ID))
    frames = await reader
    assert ids(frames) == [1, 2, 3, 4, 5, 6, 7]
    assert [f.event for f in frames][-2:] == ["training.completed", "end"]
    for frame in frames[:-1]:
        payload = json.loads(frame.data)
        assert payload["type"] == frame.event  # event name = JSON type
        assert str(payload["id"]) == frame.id
        assert payload["jobId"] == JOB_ID
    # after the terminal event the log is persisted to the run's storage
    persisted = open_storage(storage_uri).get_bytes(RunLayout(storage_uri, JOB_ID).events)
    assert persisted == log_path.read_bytes()


async def test_resume_from_every_possible_id(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    write_run(writer, 6)  # ids 1..8, 8 is terminal
    sc = sidecars.start(log_path, storage_uri)
    results = await asyncio.gather(
        *(collect(sc.stream_url, last_event_id=str(k)) for k in range(9)),
        collect(sc.stream_url),  # no Last-Event-ID: everything
    )
    for k, frames in enumerate(results[:-1]):
        assert ids(frames) == list(range(k + 1, 9)), k
        assert frames[-1].is_end
    assert ids(results[-1]) == list(range(1, 9))


async def test_resume_past_the_newest_id_waits_for_later_events(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    write_logs(writer, 2)
    sc = sidecars.start(log_path, storage_uri)
    reader = asyncio.create_task(collect(sc.stream_url, last_event_id="4"))
    await asyncio.sleep(0.3)
    write_run(writer, 3)  # ids 3..7
    frames = await reader
    assert ids(frames) == [5, 6, 7]
    assert frames[-1].is_end


async def test_bad_last_event_id_and_wrong_job_are_json_errors(
    sidecars: Sidecars, log_path: Path, storage_uri: str
) -> None:
    sc = sidecars.start(log_path, storage_uri)
    async with httpx.AsyncClient() as client:
        resp = await client.get(sc.stream_url, headers={"Last-Event-ID": "abc"})
        assert resp.status_code == 400
        assert "Last-Event-ID" in resp.json()["error"]
        resp = await client.get(f"{sc.base}/v1/jobs/other-job/events/stream")
        assert resp.status_code == 404
        assert "other-job" in resp.json()["error"]
        resp = await client.get(f"{sc.base}/nothing/here")
        assert resp.status_code == 404
        assert resp.json() == {"error": "Not Found"}
        health = (await client.get(f"{sc.base}/healthz")).json()
        assert health["status"] == "ok" and health["jobId"] == JOB_ID


async def test_partial_line_is_held_back(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    write_logs(writer, 2)
    whole = json.dumps({"id": 3, "type": "training.log", "jobId": JOB_ID, "step": 3, "loss": 0.5})
    with log_path.open("a") as fh:
        fh.write(whole[:25])  # the trainer is in the middle of writing line 3
    sc = sidecars.start(log_path, storage_uri)
    with pytest.raises(TimeoutError):
        await collect(sc.stream_url, stop=lambda f: len(f) >= 3, timeout=1.0)
    reader = asyncio.create_task(collect(sc.stream_url, stop=lambda f: len(f) >= 3))
    await asyncio.sleep(0.3)
    assert not reader.done()
    with log_path.open("a") as fh:
        fh.write(whole[25:] + "\n")
    frames = await reader
    assert ids(frames) == [1, 2, 3]
    assert json.loads(frames[2].data) == json.loads(whole)


async def test_keepalive_while_idle(sidecars: Sidecars, log_path: Path, storage_uri: str) -> None:
    sc = sidecars.start(log_path, storage_uri, ARKOR_PING_SECONDS="0.2")
    frames = await collect(sc.stream_url, pings=True, stop=lambda f: len(f) >= 3, timeout=5)
    assert [f.event for f in frames] == ["ping", "ping", "ping"]
    assert all(f.id is None for f in frames)


async def test_disconnect_mid_stream(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    write_logs(writer, 5)
    sc = sidecars.start(log_path, storage_uri)
    first = await collect(sc.stream_url, stop=lambda f: len(f) >= 2)
    assert ids(first) == [1, 2]
    idle = await collect(sc.stream_url, stop=lambda f: len(f) >= 5)  # then idle at the tail
    assert ids(idle) == [1, 2, 3, 4, 5]
    for _ in range(100):  # both disconnects are noticed and their streams released
        if sc.health()["clients"] == 0:
            break
        await asyncio.sleep(0.05)
    assert sc.health()["clients"] == 0
    write_run(writer, 1)  # ids 6..8
    rest = await collect(sc.stream_url, last_event_id="2")
    assert ids(rest) == [3, 4, 5, 6, 7, 8]
