"""The fine-tune flow registers a completed run in MLflow (read back with MLflow's own client),
says so when no registry is configured, and fails clearly, keeping the adapter, when MLflow
cannot be reached."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.flows.registry import SKIPPED
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY, free_port
from tests.flows.helpers import eventually, tiny_config
from tests.flows.test_local_backend import local_env  # noqa: F401 - fixture
from tests.flows.test_secrets import TOKEN, bearer_url  # noqa: F401 - fixture

pytestmark = [pytest.mark.prefect, pytest.mark.train, pytest.mark.s3]


async def flow_logs(flow_run_id: uuid.UUID) -> list[str]:
    """The flow run's log lines (they reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    return [log.message for log in logs]


@pytest.mark.mlflow
@pytest.mark.timeout(400)
async def test_a_completed_fine_tune_is_registered_with_its_lineage_and_no_secret(  # noqa: PLR0917
    prefect_server: str,
    local_env: dict[str, Any],  # noqa: F811
    bearer_url: str,  # noqa: F811
    tiny_model_dir: Path,
    s3_prefix: str,
    mlflow_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.blocks.system import Secret

    from arkor_ops.config import validate_config
    from arkor_ops.eventlog import iter_log_lines
    from arkor_ops.flows.fine_tune import fine_tune
    from arkor_ops.storage import join_uri, open_storage

    monkeypatch.setenv("ARKOR_STORAGE_URI", s3_prefix)
    block = f"registry-token-{uuid.uuid4().hex[:8]}"
    await Secret(value=TOKEN).asave(block)
    name = f"registry-{uuid.uuid4().hex[:6]}"
    config = tiny_config(
        "/x", model=str(tiny_model_dir), name=name, dataset={"type": "blob", "url": bearer_url}
    )
    state = await fine_tune(
        config=config,
        backend={"backend": "local"},
        dataset_token_block=block,
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = await state.result()
    job_id = result["job"]["id"]
    (final,) = [a["uri"] for a in result["artifacts"] if a["kind"] == "final"]
    registered = result["registry"]
    assert registered["model_name"] == name and registered["version"] == "1"

    storage = open_storage(final)
    events_uri = join_uri(s3_prefix, job_id, "events.jsonl")
    await eventually(lambda: _exists(storage, events_uri), 60)
    events = list(iter_log_lines(storage.get_bytes(events_uri)))
    losses = [(e["step"], e["loss"]) for e in events if e["type"] == "training.log"]
    started = next(e for e in events if e["type"] == "training.started")
    manifest = json.loads(storage.get_bytes(join_uri(final, "manifest.json")))

    mlflow = MlflowClient()
    (run,) = mlflow.search_runs(
        [mlflow.get_experiment_by_name(mlflow_env["MLFLOW_EXPERIMENT_NAME"]).experiment_id]
    )
    assert run.info.run_id == registered["run_id"] and run.info.status == "FINISHED"
    params = run.data.params
    assert params["name"] == name and params["model"] == str(tiny_model_dir)
    assert params["maxSteps"] == "4" and params["lora.r"] == "4" and params["batchSize"] == "2"
    assert params["dataset.type"] == "blob" and params["dataset.url"] == bearer_url
    history = mlflow.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == losses and len(losses) == 4

    adapter = Path(mlflow.download_artifacts(run.info.run_id, "adapter", str(tmp_path)))
    files = {str(p.relative_to(adapter)) for p in adapter.rglob("*") if p.is_file()}
    assert files == {f["path"] for f in manifest["files"]} | {"manifest.json"}
    assert "adapter_model.safetensors" in files
    weights = join_uri(final, "adapter_model.safetensors")
    assert (adapter / "adapter_model.safetensors").read_bytes() == storage.get_bytes(weights)

    (version,) = mlflow.search_model_versions(f"name = '{name}'")
    assert version.run_id == run.info.run_id and version.version == "1"
    lineage = {
        "arkor-ops.job_id": job_id,
        "arkor-ops.config_hash": validate_config(config).config_hash(),
        "arkor-ops.base_model": manifest["base_model"],
        "arkor-ops.dataset_uri": bearer_url,
        "arkor-ops.dataset_version": f"sha256:{started['metadata']['datasetFingerprint']}",
        "arkor-ops.dataset_fingerprint": started["metadata"]["datasetFingerprint"],
        "arkor-ops.final_adapter": final,
    }
    assert {k: v for k, v in version.tags.items() if k.startswith("arkor-ops.")} == lineage
    assert {k: v for k, v in run.data.tags.items() if k.startswith("arkor-ops.")} == lineage

    sent = json.dumps([params, run.data.tags, version.tags, version.description])
    for secret in (TOKEN, ACCESS_KEY, SECRET_KEY):
        assert secret not in sent

    async def registered_logged() -> bool:  # logs reach the API in batches, after the run
        logs = await flow_logs(state.state_details.flow_run_id)
        return any(f"Registered {name} version 1" in line for line in logs)

    await eventually(registered_logged, 30)


async def _exists(storage: Any, uri: str) -> bool:
    return bool(storage.exists(uri))


async def test_without_a_tracking_uri_the_flow_completes_and_says_it_skipped(
    prefect_server: str,
    local_env: dict[str, Any],  # noqa: F811
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from arkor_ops.flows.fine_tune import fine_tune

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tiny_config(str(local_env["dataset"]), model=str(tiny_model_dir))
    state = await fine_tune(config=config, backend={"backend": "local"}, return_state=True)
    assert state.is_completed(), state.message
    result = await state.result()
    assert result["job"]["status"] == "completed" and result["registry"] is None
    flow_run_id = state.state_details.flow_run_id

    async def said_so() -> bool:
        return SKIPPED in await flow_logs(flow_run_id)

    await eventually(said_so, 30)


@pytest.mark.timeout(400)
async def test_an_unreachable_registry_fails_the_flow_run_after_retries_and_keeps_the_adapter(
    prefect_server: str,
    local_env: dict[str, Any],  # noqa: F811
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from arkor_ops.flows.fine_tune import fine_tune
    from arkor_ops.storage import join_uri, open_storage

    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", nobody)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("ARKOR_REGISTRY_RETRY_DELAYS_SECONDS", "[0, 0]")
    config = tiny_config(str(local_env["dataset"]), model=str(tiny_model_dir))
    state = await fine_tune(config=config, backend={"backend": "local"}, return_state=True)
    assert state.is_failed()
    assert f"MLflow at {nobody}" in state.message and "the adapter stays at" in state.message
    final = state.message.split("the adapter stays at ", 1)[1].split(")")[0]
    assert open_storage(final).exists(join_uri(final, "manifest.json"))
    async with get_client() as client:
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    (register,) = [t for t in tasks if t.name.startswith("register-adapter")]
    assert register.run_count == 3 and register.state.is_failed()
