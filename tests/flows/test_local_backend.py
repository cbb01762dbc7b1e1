"""The fine_tune flow on the LocalBackend: a real tiny-model run, cancellation, the reaper.

Cancellation needs a runner (``serve()``), so those tests start one in a subprocess; their
worker is the scripted fake worker of tests/local (the process handling is what is tested).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.flows.helpers import (
    by_key,
    embedded_png,
    eventually,
    flow_process_pids,
    latest,
    png_info,
    run_artifacts,
    serve_runner,
    stop_logged,
    stopped_line,
    tiny_config,
    wait_final,
)

pytestmark = [pytest.mark.prefect]

REPO = Path(__file__).resolve().parents[2]
ROW = '{"messages":[{"role":"user","content":"hi %d"},{"role":"assistant","content":"hello %d"}]}'


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Environment of a local-backend run (this process and runner subprocesses)."""
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("\n".join(ROW % (i, i) for i in range(16)) + "\n")
    env = {
        "ARKOR_BACKEND": "local",
        "ARKOR_RUNS_DIR": str(tmp_path / "runs"),
        "ARKOR_SIDECAR_LINGER_SECONDS": "1",
        "ARKOR_CANCEL_TIMEOUT_SECONDS": "10",
        "ARKOR_PING_SECONDS": "1",
        "PYTHONPATH": str(REPO),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {"env": env, "dataset": dataset, "runs": tmp_path / "runs"}


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_pids(run_dir: Path) -> list[int]:
    """The worker and sidecar pids recorded in a local run's state file."""
    import json

    state = json.loads((run_dir / "state.json").read_text())
    return [state[role]["pid"] for role in ("worker", "sidecar") if role in state]


@pytest.mark.train
async def test_tiny_model_run_completes_with_artifacts(
    prefect_server: str, local_env: dict[str, Any], tiny_model_dir: Path
) -> None:
    from prefect.client.orchestration import get_client

    from arkor_ops.flows.fine_tune import fine_tune

    config = tiny_config(str(local_env["dataset"]), model=str(tiny_model_dir))
    state = await fine_tune(config=config, backend={"backend": "local"}, return_state=True)
    assert state.is_completed(), state.message
    result = await state.result()
    assert result["job"]["status"] == "completed"
    async with get_client() as client:
        arts = await run_artifacts(client, state.state_details.flow_run_id)
    job_id = result["job"]["id"]
    arts_by_key = by_key(arts)  # one card per artifact on the run page: three
    assert sorted(arts_by_key) == [f"{job_id}-{w}" for w in ("checkpoints", "loss", "progress")]
    assert float(arts_by_key[f"{job_id}-progress"].data) == 100.0
    loss = arts_by_key[f"{job_id}-loss"]
    assert [r["step"] for r in json.loads(loss.data)] == ["1", "2", "3", "4"]
    checkpoints = json.loads(arts_by_key[f"{job_id}-checkpoints"].data)
    assert [(r["step"], r["artifact"]) for r in checkpoints] == [
        ("2", "checkpoint"),
        ("4", "checkpoint"),
        ("4", "final adapter"),
    ]
    assert all(r["train_loss"] for r in checkpoints)
    # the curve is saved beside the final adapter, the same picture the loss table shows
    final = Path(urlparse(checkpoints[-1]["uri"]).path)
    saved = (final.parent / "loss.png").read_bytes()
    assert png_info(saved)["Description"] == "train loss: 4 points; eval loss: 0 points"
    assert saved == embedded_png(loss.description)
    assert f"Saved as `{final.parent.as_uri()}/loss.png`" in loss.description


@pytest.fixture
def runner(local_env: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[str]:
    """A ``serve()`` runner subprocess with the fake worker; yields the deployment suffix."""
    with serve_runner(
        dict(os.environ, ARKOR_WORKER_MODULE="tests.local.fake_worker", FAKE_STEP_SECONDS="0.5"),
        request,
    ) as suffix:
        yield suffix


async def deployment_named(client: Any, name: str) -> Any:
    """The fine-tune deployment ``name`` once the runner has registered it, else None."""
    from prefect.exceptions import ObjectNotFound

    try:
        return await client.read_deployment_by_name(f"fine-tune/{name}")
    except ObjectNotFound:
        return None


async def _start_and_cancel(suffix: str, local_env: dict[str, Any]) -> tuple[Any, Path]:
    """Start a fine-tune run through the runner, cancel it once training; returns (run, dir)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    run, run_dir = await _start_training(suffix, local_env)
    async with get_client() as client:
        await client.set_flow_run_state(run.id, Cancelling(), force=True)
    return run, run_dir


async def _start_training(suffix: str, local_env: dict[str, Any]) -> tuple[Any, Path]:
    """Start a fine-tune run through the runner; returns (run, dir) once it trains and the flow
    follows it (a training.log reached the progress artifact: the wait task is running)."""
    from prefect.client.orchestration import get_client

    from arkor_ops.backends.local.backend import job_id_for

    name = f"cancel-{uuid.uuid4().hex[:6]}"
    config = tiny_config(str(local_env["dataset"]), name=name, maxSteps=1_000_000)
    async with get_client() as client:
        deployment = await eventually(lambda: deployment_named(client, f"fine-tune{suffix}"), 60)
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"config": config, "backend": {"backend": "local"}}
        )
        run_dir = local_env["runs"] / job_id_for(name, str(run.id))

        async def training() -> bool:
            progress = latest(await run_artifacts(client, run.id), "progress")
            return bool(progress) and float(progress[0].data) > 0

        await eventually(training, timeout=90)
    return run, run_dir


async def test_cancelling_the_flow_run_stops_the_local_run(
    prefect_server: str, local_env: dict[str, Any], runner: str
) -> None:

    from prefect.client.orchestration import get_client

    run, run_dir = await _start_and_cancel(runner, local_env)
    pids = run_pids(run_dir)

    async def gone() -> bool:
        return not any(pid_alive(p) for p in pids)

    await eventually(gone, timeout=120, interval=0.2)
    async with get_client() as client:
        final = await wait_final(client, run.id, timeout=30)
    assert final.state.is_cancelled()
    assert "training.cancelled" in (run_dir / "events.jsonl").read_text()


@pytest.mark.parametrize("runner", ["broken-hooks-checking"], indirect=True)
async def test_a_cancelled_flow_stops_its_training_on_its_way_out(
    prefect_server: str, local_env: dict[str, Any], runner: str
) -> None:
    """Hooks broken: the flow itself stops the run before its process exits. The runner's SIGTERM
    comes first and the termination path stops it; when asyncio swallowed the signal's exception
    (raised inside one of its callbacks, it is logged and dropped) the flow's state check does."""
    from prefect.client.orchestration import get_client

    run, run_dir = await _start_and_cancel(runner, local_env)
    pids = run_pids(run_dir)

    async def gone() -> bool:
        return not any(pid_alive(p) for p in pids)

    await eventually(gone, timeout=60, interval=0.2)
    async with get_client() as client:
        final = await wait_final(client, run.id, timeout=60)
    assert final.state.is_cancelled(), final.state
    assert "training.cancelled" in (run_dir / "events.jsonl").read_text()


@pytest.mark.parametrize("runner", ["broken-hooks"], indirect=True)
async def test_reaper_stops_the_run_when_the_hook_fails(
    prefect_server: str, local_env: dict[str, Any], runner: str
) -> None:
    """The flow process killed (SIGKILL: no termination path) and its crash hook failing leave
    the training going; the reaper stops it."""
    import signal

    from prefect.client.orchestration import get_client

    from arkor_ops.flows.reaper import reap_orphans

    run, run_dir = await _start_training(runner, local_env)
    for pid in flow_process_pids(run.id):
        os.kill(pid, signal.SIGKILL)
    async with get_client() as client:
        final = await wait_final(client, run.id, timeout=60)
    assert final.state.is_crashed(), final.state
    pids = run_pids(run_dir)
    assert any(pid_alive(p) for p in pids), "the broken hook should have left the run going"

    reaped = await reap_orphans(backend={"backend": "local"})
    assert reaped == [run_dir.name]
    assert not any(pid_alive(p) for p in pids)


async def test_a_flow_run_stops_its_training_when_cancelled_without_any_signal(
    prefect_server: str, local_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No runner, so no SIGTERM (as when the runner's signal is lost): the flow's own check acts."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelling

    from arkor_ops.flows.fine_tune import fine_tune

    monkeypatch.setenv("ARKOR_WORKER_MODULE", "tests.local.fake_worker")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.5")
    run_name = f"no-runner-{uuid.uuid4().hex[:6]}"
    config = tiny_config(str(local_env["dataset"]), maxSteps=1_000_000)
    flow = fine_tune.with_options(flow_run_name=run_name)
    running = asyncio.ensure_future(
        flow(config=config, backend={"backend": "local"}, return_state=True)
    )
    try:
        async with get_client() as client:

            async def training() -> Any:
                events = list(local_env["runs"].glob("*/events.jsonl"))
                if not (events and "training.log" in events[0].read_text()):
                    return None
                name = FlowRunFilterName(any_=[run_name])
                (found,) = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=name))
                return found, events[0].parent

            run, run_dir = await eventually(training, timeout=90)
            pids = run_pids(run_dir)
            await client.set_flow_run_state(run.id, Cancelling(), force=True)
            state = await asyncio.wait_for(asyncio.shield(running), timeout=120)
            assert not any(pid_alive(p) for p in pids)
            assert state.is_cancelled() and stopped_line(state.message or ""), state
            assert "training.cancelled" in (run_dir / "events.jsonl").read_text()
            final = await wait_final(client, run.id, timeout=10)
            assert final.state.is_cancelled(), final.state
            await eventually(lambda: stop_logged(client, run.id), timeout=15)
    finally:
        running.cancel()
