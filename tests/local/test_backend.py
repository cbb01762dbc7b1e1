"""LocalBackend end to end with the scripted worker: run, adopt, cancel, crash, replay."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.local import job_id_for
from arkor_ops.backends.local.run import proc_info
from arkor_ops.config import validate_config
from arkor_ops.errors import JobNotFoundError, StreamError
from arkor_ops.eventlog import EventLogWriter
from arkor_ops.events import Frame, TrainingLog, TrainingStarted
from arkor_ops.storage import RunLayout, open_storage
from tests.local.helpers import config_fields, make_backend

pytestmark = pytest.mark.timeout(90)


async def frames_of(backend, job_id: str, last: str | None = None) -> list[Frame]:  # type: ignore[no-untyped-def]
    out = []
    async with asyncio.timeout(30):
        async for frame in backend.events(job_id, last):
            if not frame.is_ping:
                out.append(frame)
    return out


def test_job_ids_are_dns_safe_and_keyed() -> None:
    assert job_id_for("Support Bot v1!", "flow-run-1") == job_id_for(
        "Support Bot v1!", "flow-run-1"
    )
    assert job_id_for("Support Bot v1!", "flow-run-1").startswith("support-bot-v1-")
    assert job_id_for("x") != job_id_for("x")
    assert job_id_for("___").startswith("run-")
    assert len(job_id_for("a" * 300)) <= 63


async def test_a_run_completes_and_its_artifacts_are_in_storage(
    runs_dir: Path, dataset_file: Path
) -> None:
    backend = make_backend(runs_dir)
    steps: list[int] = []
    trainer = create_async_trainer(
        config_fields(dataset_file), backend=backend, on_log=lambda ctx: steps.append(ctx.step)
    )
    result = await trainer.wait()
    assert result.job.status == "completed"
    assert steps == [1, 2, 3, 4, 5, 6]
    assert [a.kind for a in result.artifacts] == ["final"]
    job_id = result.job.id
    assert job_id.startswith("support-bot-v1-")
    run_dir = runs_dir / job_id
    state = json.loads((run_dir / "state.json").read_text())
    assert state["worker"]["pid"] and state["port"]
    assert json.loads((run_dir / "config.json").read_text())["maxSteps"] == 6
    storage_uri = f"file://{runs_dir.resolve()}/storage"
    storage = open_storage(storage_uri)
    layout = RunLayout(storage_uri, job_id)
    assert storage.exists(layout.config)
    assert storage.exists(layout.checkpoint(3) + "/manifest.json")
    desc = await backend.describe(job_id)
    assert (desc.job.status, desc.step, desc.job.name) == ("completed", 6, "Support Bot v1")
    assert desc.loss is not None and desc.job.started_at and desc.job.completed_at


async def test_idempotency_key_adopts_the_existing_run(runs_dir: Path, dataset_file: Path) -> None:
    backend = make_backend(runs_dir)
    config = validate_config(config_fields(dataset_file, max_steps=3))
    first, second = await asyncio.gather(
        backend.submit(config, idempotency_key="flow-run-42"),
        backend.submit(config, idempotency_key="flow-run-42"),
    )
    assert first.id == second.id
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted([first.id, "storage"])
    again = await make_backend(runs_dir).submit(config, idempotency_key="flow-run-42")
    assert again.id == first.id
    frames = await frames_of(backend, first.id)
    assert [f.event for f in frames].count("training.started") == 1


async def test_cancel_stops_the_worker_and_the_sidecar(
    runs_dir: Path,
    dataset_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    backend = make_backend(runs_dir)
    job = await backend.submit(validate_config(config_fields(dataset_file, max_steps=500)))
    seen: list[Frame] = []
    async for frame in backend.events(job.id):
        seen.append(frame)
        if frame.event == "training.log":
            break
    await backend.cancel(job.id)
    desc = await backend.describe(job.id)
    assert desc.job.status == "cancelled"
    run_dir = runs_dir / job.id
    state = json.loads((run_dir / "state.json").read_text())
    for role in ("worker", "sidecar"):
        assert not Path(f"/proc/{state[role]['pid']}").exists() or (
            "Z" in Path(f"/proc/{state[role]['pid']}/stat").read_text().split()[2]
        )
    # the worker itself wrote training.cancelled (not the backend post mortem)
    assert "on behalf of" not in caplog.text
    frames = await frames_of(make_backend(runs_dir), job.id, last=seen[-1].id)
    assert [f.event for f in frames][-2:] == ["training.cancelled", "end"]
    await backend.cancel(job.id)  # cancelling again is harmless


async def test_cancel_kills_a_worker_that_ignores_sigterm(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    monkeypatch.setenv("FAKE_IGNORE_SIGTERM", "1")
    backend = make_backend(runs_dir, cancel_timeout_seconds=1)
    job = await backend.submit(validate_config(config_fields(dataset_file, max_steps=500)))
    await asyncio.sleep(1)
    await backend.cancel(job.id)
    frames = await frames_of(backend, job.id)
    assert [f.event for f in frames][-2:] == ["training.cancelled", "end"]


async def test_a_worker_that_dies_silently_ends_the_run_as_failed(
    runs_dir: Path, dataset_file: Path
) -> None:
    backend = make_backend(runs_dir, worker_module="tests.local.no_such_worker")
    trainer = create_async_trainer(config_fields(dataset_file), backend=backend)
    result = await trainer.wait()
    assert result.job.status == "failed"
    assert "No module named" in (result.job.error or "")
    assert "worker.log" in (result.job.error or "")


async def test_scripted_failure_is_reported(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL_AT_STEP", "2")
    trainer = create_async_trainer(config_fields(dataset_file), backend=make_backend(runs_dir))
    result = await trainer.wait()
    assert (result.job.status, result.job.error) == ("failed", "scripted failure")


@pytest.mark.s3
async def test_replay_after_the_processes_are_gone_from_s3(
    runs_dir: Path, dataset_file: Path, s3_prefix: str
) -> None:
    backend = make_backend(runs_dir, storage_uri=s3_prefix, sidecar_linger_seconds=0.2)
    trainer = create_async_trainer(config_fields(dataset_file), backend=backend)
    live = await trainer.wait()
    job_id = live.job.id
    state = json.loads((runs_dir / job_id / "state.json").read_text())
    for _ in range(100):  # the sidecar lingers briefly, then exits
        if not Path(f"/proc/{state['sidecar']['pid']}").exists():
            break
        await asyncio.sleep(0.1)
    later = make_backend(runs_dir, storage_uri=s3_prefix)  # "a later process"
    from_disk = await frames_of(later, job_id)
    assert [f.event for f in from_disk][-2:] == ["training.completed", "end"]
    assert [int(f.id) for f in from_disk if f.id] == list(range(1, len(from_disk)))
    shutil.rmtree(runs_dir / job_id)  # only storage is left
    from_s3 = await frames_of(later, job_id, last="3")
    assert [f.id for f in from_s3[:-1]] == [f.id for f in from_disk[3:-1]]
    assert (await later.describe(job_id)).job.status == "completed"
    with pytest.raises(StreamError) as err:
        await frames_of(later, "no-such-run-1234")
    assert err.value.status == 410
    with pytest.raises(JobNotFoundError):
        await later.describe("no-such-run-1234")


async def test_secrets_reach_only_the_worker(
    runs_dir: Path, dataset_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    backend = make_backend(runs_dir)
    fields = config_fields(dataset_file, max_steps=30)
    fields["dataset"] = {"type": "blob", "url": "https://example.invalid/d", "token": "s3cr3t-tok"}
    job = await backend.submit(validate_config(fields))
    run_dir = runs_dir / job.id
    state = json.loads((run_dir / "state.json").read_text())
    worker_env = Path(f"/proc/{state['worker']['pid']}/environ").read_bytes()
    sidecar_env = Path(f"/proc/{state['sidecar']['pid']}/environ").read_bytes()
    assert b"ARKOR_DATASET_TOKEN=s3cr3t-tok" in worker_env
    assert b"s3cr3t-tok" not in sidecar_env
    for path in run_dir.glob("*.json"):
        assert "s3cr3t-tok" not in path.read_text()
    await backend.cancel(job.id)
    assert os.environ.get("ARKOR_DATASET_TOKEN") is None


async def test_the_sidecar_stops_when_the_worker_is_gone_and_nobody_watches(
    runs_dir: Path, dataset_file: Path
) -> None:
    backend = make_backend(runs_dir, worker_module="tests.local.no_such_worker")
    job = await backend.submit(validate_config(config_fields(dataset_file)))
    state = json.loads((runs_dir / job.id / "state.json").read_text())
    sidecar = Path(f"/proc/{state['sidecar']['pid']}")
    for _ in range(200):
        if not sidecar.exists() or sidecar.joinpath("stat").read_text().split()[2] == "Z":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the sidecar outlived its worker")
    assert (await backend.describe(job.id)).job.status == "failed"
    frames = await frames_of(make_backend(runs_dir), job.id)
    assert [f.event for f in frames][-2:] == ["training.failed", "end"]
    storage_uri = f"file://{runs_dir.resolve()}/storage"
    persisted = open_storage(storage_uri).get_bytes(RunLayout(storage_uri, job.id).events)
    assert b"training.failed" in persisted


async def test_a_sidecar_that_no_longer_listens_is_read_from_the_log(
    runs_dir: Path, dataset_file: Path
) -> None:
    """A sidecar shutting down (after its linger) has closed its port but not yet exited: a
    follower that connects in that window replays the log instead of failing."""
    backend = make_backend(runs_dir)
    result = await create_async_trainer(config_fields(dataset_file), backend=backend).wait()
    run = backend._run(result.job.id)
    stand_in = subprocess.Popen(["sleep", "60"])  # alive, as the sidecar is while it drains
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]  # nothing listens on it once this is closed
        run.update_state(sidecar=proc_info(stand_in.pid), port=closed_port)
        assert run.sidecar_port() == closed_port
        frames = await frames_of(make_backend(runs_dir), result.job.id)
    finally:
        stand_in.kill()
        stand_in.wait()
    assert [f.event for f in frames][-2:] == ["training.completed", "end"]
    assert [f.event for f in frames].count("training.log") == 6


def test_invalid_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from arkor_ops.backends import resolve_backend
    from arkor_ops.errors import BackendError

    monkeypatch.setenv("ARKOR_STORAGE_URI", "ftp://somewhere")
    with pytest.raises(BackendError, match="ARKOR_STORAGE_URI"):
        resolve_backend("local")


def test_resolve_backend_applies_overrides_and_refuses_unknown_ones(tmp_path: Path) -> None:
    from arkor_ops.backends import resolve_backend
    from arkor_ops.backends.local import LocalBackend
    from arkor_ops.errors import BackendError

    backend = resolve_backend("local", runs_dir=tmp_path / "runs", flow_run_id="flow-1")
    assert isinstance(backend, LocalBackend)
    assert (backend.runs_dir, backend.flow_run_id) == (tmp_path / "runs", "flow-1")
    with pytest.raises(BackendError, match="local backend has no setting 'namespace'"):
        resolve_backend("local", namespace="ml")


async def test_runs_are_listed_and_name_their_flow_run(runs_dir: Path, dataset_file: Path) -> None:
    from arkor_ops.backends.local import LocalBackend

    config = validate_config(config_fields(dataset_file))
    async with make_backend(runs_dir) as plain:
        assert await plain.list_jobs() == []  # no runs folder yet
        first = await create_async_trainer(config, backend=plain).wait()
    settings = make_backend(runs_dir).settings
    async with LocalBackend(settings, flow_run_id="flow-7") as labelled:
        assert labelled.job_id_for(config, "flow-7") == job_id_for(config.name, "flow-7")
        second = await create_async_trainer(
            config, backend=labelled, idempotency_key="flow-7"
        ).wait()
        assert second.job.id == labelled.job_id_for(config, "flow-7")
        listed = await labelled.list_jobs()
        assert [d.job.id for d in listed] == [second.job.id, first.job.id]  # newest first
        assert [d.job.status for d in listed] == ["completed", "completed"]
        assert await labelled.jobs_by_flow_run() == {second.job.id: "flow-7"}


async def test_the_loss_listed_is_the_last_training_loss_not_an_eval_log(
    runs_dir: Path,
) -> None:
    # a run that evaluates logs `training.log` events with only evalLoss between the train ones
    run_dir = runs_dir / "evals-1"
    run_dir.mkdir(parents=True)
    (run_dir / "state.json").write_text('{"name": "evals", "createdAt": "2026-01-01T00:00:00Z"}')
    writer = EventLogWriter(run_dir / "events.jsonl", "evals-1")
    writer.write(TrainingStarted(job_id="evals-1"))
    writer.write(TrainingLog(job_id="evals-1", step=4, loss=1.25))
    writer.write(TrainingLog(job_id="evals-1", step=4, eval_loss=1.5))
    async with make_backend(runs_dir) as backend:
        d = await backend.describe("evals-1")
        (listed,) = await backend.list_jobs()
    assert (d.step, d.loss) == (4, 1.25)
    assert listed.loss == 1.25
