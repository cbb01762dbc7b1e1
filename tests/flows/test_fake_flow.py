"""The fine_tune flow's logic against the scripted FakeBackend (in this process, fast).

The FakeBackend lives in this process, so the flow runs here too (called directly) and the
tasks get the fake through ``arkor_ops.flows.training.resolve_backend``, the one seam for
choosing a backend (the tasks close it; the fake's server outlives that, until the test ends).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from arkor_ops.errors import BackendError, PreflightFailedError
from arkor_ops.testing import FakeBackend, scripted_events
from tests.flows.helpers import (
    by_key,
    embedded_png,
    eventually,
    png_info,
    run_artifacts,
    tiny_config,
)

pytestmark = [pytest.mark.prefect]


@pytest.fixture
def use_fake(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Returns a function that makes every task use the given FakeBackend."""
    fakes: list[FakeBackend] = []

    def install(fake: FakeBackend) -> FakeBackend:
        import arkor_ops.flows.training

        fakes.append(fake)
        monkeypatch.setattr(
            arkor_ops.flows.training, "resolve_backend", lambda name=None, **overrides: fake
        )
        return fake

    yield install
    for fake in fakes:
        fake.close()


async def test_completed_run_fills_logs_and_artifacts(use_fake: Any) -> None:
    from prefect.client.orchestration import get_client

    from arkor_ops.events import TrainingLog
    from arkor_ops.flows.fine_tune import fine_tune

    events: list[Any] = scripted_events("fake-ok", steps=4)
    at_step_4 = next(i for i, e in enumerate(events) if getattr(e, "step", None) == 4)
    events.insert(at_step_4 + 1, TrainingLog(job_id="fake-ok", step=4, eval_loss=0.7))
    fake = use_fake(FakeBackend(events, job_id="fake-ok"))
    state = await fine_tune(config=tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_completed(), state.message
    result = await state.result()
    assert result["job"]["status"] == "completed"
    assert result["metrics"]["total_steps"] == 4
    flow_run_id = state.state_details.flow_run_id
    # start_training submits, wait_for_training adopts: one key, the flow run id
    assert {s["idempotencyKey"] for s in fake.submits} == {str(flow_run_id)}

    async with get_client() as client:
        arts = await run_artifacts(client, flow_run_id)
    # the run page lists every artifact row of the flow run: three, each updated in place
    assert sorted((a.key, a.type) for a in arts) == [
        ("fake-ok-checkpoints", "table"),
        ("fake-ok-loss", "table"),
        ("fake-ok-progress", "progress"),
    ]
    arts_by_key = by_key(arts)
    progress = arts_by_key["fake-ok-progress"]
    assert float(progress.data) == 100.0
    assert progress.description == "Completed at step 4 of 4 · loss 0.5"
    loss = arts_by_key["fake-ok-loss"]
    rows = json.loads(loss.data)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["loss"] == "2"
    assert (rows[3]["loss"], rows[3]["eval_loss"]) == ("0.5", "0.7")  # the eval filled step 4 in
    assert loss.description.startswith("Train loss at 4 steps, eval loss at 1\n")
    png = png_info(embedded_png(loss.description))
    assert png["Description"] == "train loss: 4 points; eval loss: 1 points"
    assert (png["width"], png["height"]) == (700, 300)
    checkpoints_artifact = arts_by_key["fake-ok-checkpoints"]
    assert checkpoints_artifact.description == "2 checkpoints + final adapter"
    checkpoints = json.loads(checkpoints_artifact.data)
    assert checkpoints == [
        {
            "step": "2",
            "artifact": "checkpoint",
            "train_loss": "1",
            "eval_loss": "",
            "uri": "file:///fake/fake-ok/checkpoints/step-00000002/",
        },
        {
            "step": "4",
            "artifact": "checkpoint",
            "train_loss": "0.5",
            "eval_loss": "0.7",
            "uri": "file:///fake/fake-ok/checkpoints/step-00000004/",
        },
        {
            "step": "4",
            "artifact": "final adapter",
            "train_loss": "0.5",
            "eval_loss": "0.7",
            "uri": "file:///fake/fake-ok/final/",
        },
    ]


async def test_failed_training_fails_the_flow_run_with_its_error(use_fake: Any) -> None:
    from prefect.client.orchestration import get_client

    from arkor_ops.flows.fine_tune import fine_tune

    use_fake(FakeBackend(scripted_events("fake-bad", outcome="failed"), job_id="fake-bad"))
    state = await fine_tune(config=tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_failed()
    assert "CUDA OOM" in (state.message or "")
    async with get_client() as client:
        run = await client.read_flow_run(state.state_details.flow_run_id)
    assert run.state.is_failed() and "CUDA OOM" in run.state.message


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
async def test_a_bad_cancel_check_setting_fails_before_any_job(
    use_fake: Any, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from arkor_ops.flows.fine_tune import fine_tune

    fake = use_fake(FakeBackend(scripted_events("fake-x", steps=2), job_id="fake-x"))
    monkeypatch.setenv("ARKOR_FLOW_CANCEL_CHECK_SECONDS", value)
    state = await fine_tune(config=tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_failed()
    assert "ARKOR_FLOW_CANCEL_CHECK_SECONDS" in (state.message or ""), state.message
    assert fake.submits == []


async def test_retried_start_training_adopts_its_job(use_fake: Any) -> None:
    from prefect import flow, runtime, task

    from arkor_ops.flows.settings import BackendSettings
    from arkor_ops.flows.training import start_training

    fake = use_fake(FakeBackend(scripted_events("fake-r", outcome=None), job_id="fake-r"))
    attempts: list[str] = []

    @task(retries=1, retry_delay_seconds=0)
    async def flaky_start(config: Any) -> str:
        job_id = await start_training.fn(config, BackendSettings(), str(runtime.flow_run.id))
        attempts.append(job_id)
        if len(attempts) == 1:
            raise ConnectionError("lost the answer after the job was created")
        return job_id

    @flow
    async def start_twice(config: dict[str, Any]) -> str:
        from arkor_ops.config import validate_config

        return await flaky_start(validate_config(config))

    state = await start_twice(tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_completed()
    key = str(state.state_details.flow_run_id)
    assert attempts == ["fake-r", "fake-r"]
    assert [s["idempotencyKey"] for s in fake.submits] == [key, key]


@pytest.mark.parametrize(
    ("error", "submits"),
    [
        (PreflightFailedError("pre-flight: 1 bad row(s): row 3: no assistant turn"), 1),
        (BackendError("the API server answered 503"), 3),
    ],
    ids=["failed pre-flight: final", "other errors: retried"],
)
async def test_start_training_retries_all_but_a_failed_preflight(
    use_fake: Any, error: BackendError, submits: int
) -> None:
    from prefect import flow, runtime

    from arkor_ops.config import validate_config
    from arkor_ops.flows.settings import BackendSettings
    from arkor_ops.flows.training import start_training

    class Refusing(FakeBackend):
        calls = 0

        async def submit(self, config: Any, *, idempotency_key: str | None = None) -> Any:
            Refusing.calls += 1
            raise error

    use_fake(Refusing(scripted_events("fake-p", outcome=None), job_id="fake-p"))

    @flow
    async def start(config: dict[str, Any]) -> str:
        key = str(runtime.flow_run.id)
        return await start_training(validate_config(config), BackendSettings(), key)

    state = await start(tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_failed()
    assert Refusing.calls == submits
    with pytest.raises(type(error)) as raised:
        await state.result()
    assert str(raised.value) == str(error)


async def test_a_resumed_run_has_each_step_once_in_the_loss_table(use_fake: Any) -> None:
    """Killed at step 5, resumed from the checkpoint at step 4: steps 5.. are re-done."""
    from prefect.client.orchestration import get_client

    from arkor_ops.events import TrainingLog, TrainingResumed
    from arkor_ops.flows.fine_tune import fine_tune

    job = "fake-resumed"
    events: list[Any] = scripted_events(job, steps=5, outcome=None, checkpoint_every=4)
    events.append(TrainingResumed(job_id=job, step=4, reason="the pod was lost", attempt=2))
    events += [TrainingLog(job_id=job, step=s, loss=0.1 * s) for s in (5, 6)]
    events += scripted_events(job, steps=0, checkpoint_every=None)[1:]  # completed
    use_fake(FakeBackend(events, job_id=job))
    state = await fine_tune(config=tiny_config("/data/train.jsonl"), return_state=True)
    assert state.is_completed(), state.message
    async with get_client() as client:
        arts = await run_artifacts(client, state.state_details.flow_run_id)
    loss = by_key(arts)[f"{job}-loss"]
    rows = json.loads(loss.data)
    assert [r["step"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[4]["loss"] == "0.5"  # the re-done step 5, not the first attempt's
    # and the curve has each step once too
    png = png_info(embedded_png(loss.description))
    assert png["Description"] == "train loss: 6 points; eval loss: 0 points"


async def test_an_evaluation_that_waits_says_why_in_the_flow_run_log(
    prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation task logs each ``job.phase`` as the training task does, then fails the
    flow run with the job's error."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    import arkor_ops.flows.evaluation
    from arkor_ops.evaluation import validate_evaluation_config
    from arkor_ops.events import EvaluationFailed, JobPhase
    from arkor_ops.flows.evaluation import evaluate_adapter
    from arkor_ops.flows.settings import BackendSettings

    job = "fake-eval"
    events = [
        JobPhase(
            job_id=job,
            phase="unschedulable",
            reason="Unschedulable",
            message="0/2 nodes are available",
            hint="check ARKOR_K8S_GPU_TYPE",
        ),
        EvaluationFailed(job_id=job, error="the Job's deadline passed before it was scheduled"),
    ]
    fake = FakeBackend(events, job_id=job)
    monkeypatch.setattr(
        arkor_ops.flows.evaluation, "resolve_backend", lambda name=None, **overrides: fake
    )
    config = validate_evaluation_config(
        {
            "name": "eval",
            "model": "tiny",
            "evaluation": {"dataset": {"type": "file", "path": "/d.jsonl"}, "metrics": ["loss"]},
        }
    )

    @flow
    async def evaluate() -> Any:
        return await evaluate_adapter(config, BackendSettings(), "key", "final")

    try:
        state = await evaluate(return_state=True)
    finally:
        fake.close()
    assert state.is_failed()
    assert "deadline passed" in (state.message or ""), state.message
    flow_run_id = state.state_details.flow_run_id
    line = (
        f"Job {job}: unschedulable · Unschedulable · 0/2 nodes are available"
        " · check ARKOR_K8S_GPU_TYPE"
    )

    async def logged() -> bool:
        async with get_client() as client:
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        return line in [log.message for log in logs]

    await eventually(logged, timeout=15)
