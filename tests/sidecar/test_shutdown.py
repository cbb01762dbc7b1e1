"""Stopping the sidecar: SIGTERM with clients connected, persistence to S3, linger, bad env."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arkor_ops.eventlog import EventLogWriter, iter_log_lines
from arkor_ops.events import TrainingFailed, TrainingStarted
from arkor_ops.storage import RunLayout, open_storage
from tests.sidecar.helpers import JOB_ID, Sidecars, collect, ids, write_logs, write_run

pytestmark = [pytest.mark.timeout(90), pytest.mark.s3]


def persisted_ids(storage_uri: str) -> list[int]:
    data = open_storage(storage_uri).get_bytes(RunLayout(storage_uri, JOB_ID).events)
    return [int(obj["id"]) for obj in iter_log_lines(data)]


async def test_sigterm_while_a_client_is_connected_loses_nothing(
    sidecars: Sidecars, log_path: Path, s3_prefix: str, writer: EventLogWriter
) -> None:
    writer.write(TrainingStarted(job_id=JOB_ID))
    write_logs(writer, 4)  # ids 1..5
    sc = sidecars.start(log_path, s3_prefix)
    reader = asyncio.create_task(collect(sc.stream_url))
    await asyncio.sleep(0.5)
    write_logs(writer, 2, start_step=5)  # ids 6, 7 arrive just before the stop
    assert await asyncio.to_thread(sc.stop) == 0  # clean exit
    seen = await reader  # the stream closed without `end`: the run is not over
    assert ids(seen) == [1, 2, 3, 4, 5, 6, 7]
    assert not any(f.is_end for f in seen)
    # what it had is in storage: a client that finds no sidecar replays from there
    assert persisted_ids(s3_prefix) == [1, 2, 3, 4, 5, 6, 7]
    # the trainer goes on; a restarted sidecar serves the rest after the client's last id
    write_logs(writer, 3, start_step=7)
    writer.write(TrainingFailed(job_id=JOB_ID, error="out of memory", step=7))
    sc2 = sidecars.start(log_path, s3_prefix, port=sc.port)
    rest = await collect(sc2.stream_url, last_event_id=seen[-1].id)
    assert ids(seen) + ids(rest) == list(range(1, 12))
    assert rest[-1].is_end
    assert "terminal" in sc2.health() and sc2.health()["terminal"] is True


async def test_terminal_event_persists_the_log_to_s3(
    sidecars: Sidecars, log_path: Path, s3_prefix: str, writer: EventLogWriter
) -> None:
    sc = sidecars.start(log_path, s3_prefix)
    write_run(writer, 3)
    frames = await collect(sc.stream_url)
    assert frames[-1].is_end
    for _ in range(100):
        try:
            if persisted_ids(s3_prefix) == list(range(1, 6)):
                break
        except Exception:
            pass
        await asyncio.sleep(0.05)
    assert persisted_ids(s3_prefix) == [1, 2, 3, 4, 5]
    assert sc.stop() == 0


async def test_linger_stops_the_sidecar_after_the_run_ends(
    sidecars: Sidecars, log_path: Path, storage_uri: str, writer: EventLogWriter
) -> None:
    sc = sidecars.start(log_path, storage_uri, ARKOR_SIDECAR_LINGER_SECONDS="0.5")
    write_run(writer, 2)
    assert await asyncio.to_thread(sc.proc.wait, 15) == 0
    data = open_storage(storage_uri).get_bytes(RunLayout(storage_uri, JOB_ID).events)
    assert data == log_path.read_bytes()


def test_missing_environment_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARKOR_")}
    env["ARKOR_STORAGE_URI"] = "ftp://nope"
    proc = subprocess.run(
        [sys.executable, "-m", "arkor_ops.sidecar"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "ARKOR_JOB_ID" in err and "ARKOR_STORAGE_URI" in err
