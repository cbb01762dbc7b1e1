"""The dataset-update trigger, end to end: a new dataset version in S3 → the watcher's event →
one retrain flow run, executed by a runner serving the deployments as `python -m
arkor_ops.flows.deploy` does → training → evaluation → the promotion gate.

A real Prefect server, a real MLflow server, moto for S3, the local backend and the tiny model.

- v1 (the triage rows) trains, is evaluated and promotes itself (the first version).
- v2 (greetings that teach nothing about triage) trains and is evaluated beside the champion:
  its held-out loss is worse, the flow run completes with "kept champion v1: …", v1 stays the
  champion, v2 is registered as a candidate.
- The same version seen again starts no run at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.flows.helpers import eventually, tiny_config
from tests.local.helpers import REPO

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.mlflow,
    pytest.mark.s3,
    pytest.mark.train,
    pytest.mark.timeout(1200),
]

TRAIN_ROWS = REPO / "examples" / "triage" / "train.jsonl"
TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"
GREETING = '{"messages":[{"role":"user","content":"hi %d"},{"role":"assistant","content":"hey"}]}'


async def _runs(client: Any, deployment_name: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    return list(
        await client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment_name]))
        )
    )


async def _finished(client: Any, deployment_name: str, count: int) -> list[Any]:
    """The deployment's flow runs once ``count`` of them are final, else []."""
    runs = await _runs(client, deployment_name)
    final = [r for r in runs if r.state is not None and r.state.is_final()]
    return final if len(final) >= count else []


async def test_a_dataset_update_retrains_evaluates_and_promotes_only_what_is_better(  # noqa: PLR0917
    prefect_server: str,
    mlflow_env: dict[str, str],
    s3_server: Any,
    s3_bucket: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    from arkor_ops.flows.watcher import watch_datasets

    name = f"loop-{uuid.uuid4().hex[:6]}"
    config = tiny_config(
        "/replaced/by/the/trigger.jsonl",
        model=str(tiny_model_dir),
        name=name,
        maxSteps=16,
        learningRate=0.01,
        lora={"r": 4, "alpha": 8},
    )
    (tmp_path / "retrain.json").write_text(json.dumps(config))
    gate = {
        "evaluation": {
            "dataset": {"type": "file", "path": str(TEST_ROWS)},
            "metrics": ["loss", "json_valid"],
            "maxSamples": 4,
            "generation": {"maxNewTokens": 16},
        },
        "promotion": {"metric": "loss"},
    }
    (tmp_path / "gate.json").write_text(json.dumps(gate))
    watched = f"s3://{s3_bucket}/datasets/"
    env = {
        "ARKOR_BACKEND": "local",
        "ARKOR_RUNS_DIR": str(tmp_path / "runs"),
        "ARKOR_SIDECAR_LINGER_SECONDS": "1",
        "ARKOR_RETRAIN_CONFIG": str(tmp_path / "retrain.json"),
        "ARKOR_RETRAIN_EVALUATION": str(tmp_path / "gate.json"),
        "ARKOR_WATCH_DATASETS": watched,
        "PYTHONPATH": str(REPO),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    suffix = "-" + uuid.uuid4().hex[:8]
    retrain = f"retrain-on-dataset-update{suffix}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "tests.flows.serve_runner", suffix], env=dict(os.environ), cwd=REPO
    )
    s3 = s3_server.client()
    key = "datasets/train.jsonl"
    state = f"loop-{uuid.uuid4().hex[:8]}"
    registry = MlflowClient()
    try:
        async with get_client() as client:

            async def deployed() -> Any:
                names = {d.name for d in await client.read_deployments()}
                return retrain in names

            await eventually(deployed, timeout=120)
            await asyncio.sleep(2)  # the triggers service loads the deployment's automation

            s3.put_object(Bucket=s3_bucket, Key=key, Body=TRAIN_ROWS.read_bytes())
            (v1,) = await watch_datasets([watched], state_prefix=state)
            EventsWorker.drain_all()
            (first,) = await eventually(lambda: _finished(client, retrain, 1), timeout=600)
            assert first.state.is_completed(), first.state.message
            assert first.parameters["dataset_version"] == v1["version"]
            assert first.state.message.startswith("promoted"), first.state.message
            champion = registry.get_model_version_by_alias(name, "champion")
            assert champion.version == "1"
            assert champion.tags["arkor-ops.dataset_uri"] == f"s3://{s3_bucket}/{key}"

            greetings = "\n".join(GREETING % i for i in range(16)) + "\n"
            s3.put_object(Bucket=s3_bucket, Key=key, Body=greetings.encode())
            (v2,) = await watch_datasets([watched], state_prefix=state)
            assert v2["version"] != v1["version"]
            EventsWorker.drain_all()
            runs = await eventually(lambda: _finished(client, retrain, 2), timeout=600)
            (second,) = [r for r in runs if r.id != first.id]
            assert second.state.is_completed(), second.state.message
            assert second.state.message.startswith("kept champion v1: loss "), second.state.message
            assert registry.get_model_version_by_alias(name, "champion").version == "1"
            candidate = registry.get_model_version(name, "2")
            assert candidate.tags["arkor-ops.dataset_version"] == v2["version"]

            # the same version seen again: nothing announced, no run
            assert await watch_datasets([watched], state_prefix=state) == []
            EventsWorker.drain_all()
            await asyncio.sleep(5)
            assert len(await _runs(client, retrain)) == 2
    finally:
        runner.terminate()
        try:
            runner.wait(timeout=20)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
