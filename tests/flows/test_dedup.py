"""A dataset version already trained for a model is not trained again: the fine-tune flow asks the
registry's lineage tags, not Prefect, so a fresh flow run (Prefect remembering nothing of the
first) starts no job. The training runs on the scripted FakeBackend (no job is what is tested);
the registry is the real MLflow server. The last test trains for real (the tiny model on the
local backend), registers, then starts a fresh flow run for the same version."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.testing import FakeBackend, scripted_events
from tests.flows.helpers import tiny_config
from tests.flows.test_fake_flow import use_fake  # noqa: F401 - fixture
from tests.flows.test_local_backend import local_env  # noqa: F401 - fixture
from tests.registry.test_register_run import blob_config, commit_adapter, register

pytestmark = [pytest.mark.prefect, pytest.mark.mlflow, pytest.mark.s3]

DATASET = "s3://datasets/support/rows.jsonl"


def registered(s3_prefix: str, version: str) -> str:
    """A model trained on ``DATASET`` at ``version`` and registered; returns its name."""
    name = f"dedup-{uuid.uuid4().hex[:6]}"
    config = blob_config(name)
    job_id = f"{name}-first"
    final = commit_adapter(s3_prefix, job_id, config)
    register(config, job_id, final, dataset_uri=DATASET, dataset_version=version)
    return name


async def test_a_version_already_registered_starts_no_job(
    use_fake: Any,  # noqa: F811
    mlflow_env: dict[str, str],
    s3_prefix: str,
) -> None:
    from arkor_ops.flows.fine_tune import fine_tune

    name = registered(s3_prefix, "etag-1")
    fake = use_fake(FakeBackend(scripted_events("dedup-job", steps=2), job_id="dedup-job"))
    state = await fine_tune(
        config=tiny_config("/data/train.jsonl", name=name),
        dataset_uri=DATASET,
        dataset_version="etag-1",
        return_state=True,
    )
    assert state.is_completed()
    assert state.message == f"dataset {DATASET} version etag-1 already trained: {name} v1"
    assert fake.submits == []
    result = await state.result()
    assert result["already_trained"] == {
        "model_name": name,
        "version": "1",
        "job_id": f"{name}-first",
    }


async def test_a_new_version_of_the_dataset_is_trained(
    use_fake: Any,  # noqa: F811
    mlflow_env: dict[str, str],
    s3_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import arkor_ops.flows.registry
    from arkor_ops.flows.fine_tune import fine_tune

    monkeypatch.setenv("ARKOR_REGISTRY_RETRY_DELAYS_SECONDS", "[]")
    name = registered(s3_prefix, "etag-1")
    fake = use_fake(FakeBackend(scripted_events("dedup-new", steps=2), job_id="dedup-new"))
    # the registration reads the run's events from the same fake
    monkeypatch.setattr(arkor_ops.flows.registry, "resolve_backend", lambda name=None, **kw: fake)
    state = await fine_tune(
        config=tiny_config("/data/train.jsonl", name=name),
        dataset_uri=DATASET,
        dataset_version="etag-2",
        return_state=True,
    )
    assert {s["idempotencyKey"] for s in fake.submits} == {str(state.state_details.flow_run_id)}
    # the fake's adapter is in no storage, so registering it fails: proof it was trained
    assert state.is_failed() and "is not committed" in state.message


async def test_without_a_registry_the_same_version_trains_as_before(
    use_fake: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from arkor_ops.flows.fine_tune import fine_tune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fake = use_fake(FakeBackend(scripted_events("dedup-none", steps=2), job_id="dedup-none"))
    state = await fine_tune(
        config=tiny_config("/data/train.jsonl"),
        dataset_uri=DATASET,
        dataset_version="etag-1",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert {s["idempotencyKey"] for s in fake.submits} == {str(state.state_details.flow_run_id)}
    assert (await state.result())["registry"] is None


@pytest.mark.train
@pytest.mark.timeout(400)
async def test_a_trained_and_registered_version_is_not_trained_again_by_a_fresh_flow_run(
    prefect_server: str,
    local_env: dict[str, Any],  # noqa: F811
    tiny_model_dir: Path,
    mlflow_env: dict[str, str],
) -> None:
    from mlflow.tracking import MlflowClient

    from arkor_ops.flows.fine_tune import fine_tune

    name = f"dedup-real-{uuid.uuid4().hex[:6]}"
    dataset = str(local_env["dataset"])
    config = tiny_config(dataset, model=str(tiny_model_dir), name=name)
    first = await fine_tune(
        config=config,
        backend={"backend": "local"},
        dataset_uri=dataset,
        dataset_version="mtime-1",
        return_state=True,
    )
    assert first.is_completed(), first.message
    registered = (await first.result())["registry"]
    assert registered["version"] == "1"
    runs = sorted(p.name for p in Path(local_env["runs"]).iterdir())

    # a new flow run knows nothing of the first: only the registry does
    again = await fine_tune(
        config=config,
        backend={"backend": "local"},
        dataset_uri=dataset,
        dataset_version="mtime-1",
        return_state=True,
    )
    assert again.is_completed()
    assert again.message == f"dataset {dataset} version mtime-1 already trained: {name} v1"
    assert (await again.result())["job"] is None
    assert sorted(p.name for p in Path(local_env["runs"]).iterdir()) == runs
    assert len(MlflowClient().search_model_versions(f"name = '{name}'")) == 1
