"""register_run against the real tracking server: what a run, its metrics, artifacts and model
version hold, read back with MLflow's own client; idempotence; what is never registered."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.config import validate_config
from arkor_ops.errors import RegistryError
from arkor_ops.events import TrainingLog, TrainingResumed, TrainingStarted
from arkor_ops.registry import RegistrySettings, lineage, register_run, step_metrics
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.mlflow, pytest.mark.s3]

TOKEN = "tok-registry-5e0c2a-do-not-store"
SIG = "sig-registry-77d1b3-do-not-store"
FINGERPRINT = "f" * 64
FILES = {
    "adapter_config.json": b'{"r": 4}',
    "adapter_model.safetensors": b"\x00weights" * 64,
    "tokenizer/tokenizer.json": b"{}",
}


def blob_config(name: str) -> Any:
    return validate_config(
        {
            "name": name,
            "model": "unsloth/gemma-4-E4B-it",
            "dataset": {
                "type": "blob",
                "url": f"https://data.example.com/rows.jsonl?X-Amz-Signature={SIG}",
                "token": TOKEN,
            },
            "lora": {"r": 4, "alpha": 8},
            "maxSteps": 4,
        }
    )


def commit_adapter(prefix: str, job_id: str, config: Any, manifest: bool = True) -> str:
    """A final adapter in run storage as the worker leaves it (manifest written last)."""
    final = join_uri(prefix, job_id, "final")
    storage = open_storage(final)
    for path, data in FILES.items():
        storage.put_bytes(join_uri(final, path), data)
    storage.put_bytes(join_uri(prefix, job_id, "loss.png"), b"\x89PNG fake")
    if manifest:
        body = {
            "step": 4,
            "config_hash": config.config_hash(),
            "dataset_fingerprint": FINGERPRINT,
            "base_model": "unsloth/gemma-4-E4B-it@0123abcd",
            "config": config.to_wire(),
            "files": [
                {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)}
                for p, d in FILES.items()
            ],
        }
        storage.put_bytes(join_uri(final, "manifest.json"), json.dumps(body).encode())
    return final


def events(job_id: str) -> list[Any]:
    """Four logged steps, a resume from step 2, steps 3 and 4 re-done, an eval at step 4."""
    log = [
        TrainingStarted(job_id=job_id, metadata={"datasetFingerprint": FINGERPRINT}),
        *(
            TrainingLog(job_id=job_id, step=s, loss=2.0 - s / 10, learning_rate=1e-4)
            for s in (1, 2, 3, 4)
        ),
        TrainingResumed(job_id=job_id, step=2, reason="pod lost", attempt=2),
        TrainingLog(job_id=job_id, step=3, loss=1.55, learning_rate=5e-5),
        TrainingLog(job_id=job_id, step=4, loss=1.45, learning_rate=2.5e-5),
        TrainingLog(job_id=job_id, step=4, eval_loss=1.9),
    ]
    return log


def client() -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def register(config: Any, job_id: str, final: str, **kw: Any) -> Any:
    return register_run(
        RegistrySettings(),
        job_id=job_id,
        config=config,
        events=events(job_id),
        final_uri=final,
        **kw,
    )


def test_a_run_is_logged_and_its_adapter_registered_with_its_lineage(
    mlflow_env: dict[str, str], s3_prefix: str, tmp_path: Path
) -> None:
    name = f"reg-{uuid.uuid4().hex[:6]}"
    job_id = f"{name}-abc12"
    config = blob_config(name)
    final = commit_adapter(s3_prefix, job_id, config)

    got = register(config, job_id, final)

    mlflow = client()
    run = mlflow.get_run(got.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == job_id
    params = run.data.params
    assert params["name"] == name and params["maxSteps"] == "4" and params["lora.r"] == "4"
    assert params["dataset.type"] == "blob"
    assert params["dataset.url"] == "https://data.example.com/rows.jsonl"
    history = {
        key: [(m.step, m.value) for m in mlflow.get_metric_history(got.run_id, key)]
        for key in ("train_loss", "eval_loss", "learning_rate")
    }
    assert history["train_loss"] == [(1, 1.9), (2, 1.8), (3, 1.55), (4, 1.45)]
    assert history["eval_loss"] == [(4, 1.9)]
    assert history["learning_rate"] == [(1, 1e-4), (2, 1e-4), (3, 5e-5), (4, 2.5e-5)]

    top = {a.path for a in mlflow.list_artifacts(got.run_id)}
    assert top == {"adapter", "loss.png"}
    adapter = Path(mlflow.download_artifacts(got.run_id, "adapter", str(tmp_path)))
    assert {str(p.relative_to(adapter)) for p in adapter.rglob("*") if p.is_file()} == {
        *FILES,
        "manifest.json",
    }
    for path, data in FILES.items():
        assert (adapter / path).read_bytes() == data

    lineage_tags = {
        "arkor-ops.job_id": job_id,
        "arkor-ops.config_hash": config.config_hash(),
        "arkor-ops.base_model": "unsloth/gemma-4-E4B-it@0123abcd",
        "arkor-ops.dataset_uri": "https://data.example.com/rows.jsonl",
        "arkor-ops.dataset_version": f"sha256:{FINGERPRINT}",
        "arkor-ops.dataset_fingerprint": FINGERPRINT,
        "arkor-ops.final_adapter": final,
    }
    (version,) = mlflow.search_model_versions(f"name = '{name}'")
    assert (version.version, got.model_name, got.version) == ("1", name, "1")
    assert version.run_id == got.run_id and version.status == "READY"
    assert version.source == f"runs:/{got.run_id}/adapter"
    assert {k: v for k, v in version.tags.items() if k.startswith("arkor-ops.")} == lineage_tags
    assert {k: v for k, v in run.data.tags.items() if k.startswith("arkor-ops.")} == lineage_tags

    sent = json.dumps([params, run.data.tags, version.tags, version.description, got.to_dict()])
    for secret in (TOKEN, SIG, ACCESS_KEY, SECRET_KEY):
        assert secret not in sent


def test_registering_a_job_again_adds_no_run_and_no_version(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name = f"again-{uuid.uuid4().hex[:6]}"
    job_id = f"{name}-x1"
    config = blob_config(name)
    final = commit_adapter(s3_prefix, job_id, config)
    first = register(config, job_id, final)
    second = register(config, job_id, final)
    assert second == first
    mlflow = client()
    runs = mlflow.search_runs([first.experiment_id])
    assert [r.info.run_id for r in runs] == [first.run_id]
    assert len(mlflow.search_model_versions(f"name = '{name}'")) == 1
    history = mlflow.get_metric_history(first.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2, 3, 4]


def test_an_adapter_without_its_manifest_is_never_registered(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name = f"half-{uuid.uuid4().hex[:6]}"
    job_id = f"{name}-x1"
    config = blob_config(name)
    final = commit_adapter(s3_prefix, job_id, config, manifest=False)
    with pytest.raises(RegistryError, match="is not committed"):
        register(config, job_id, final)
    mlflow = client()
    assert mlflow.get_experiment_by_name(mlflow_env["MLFLOW_EXPERIMENT_NAME"]) is None
    assert mlflow.search_model_versions(f"name = '{name}'") == []
    assert open_storage(final).exists(join_uri(final, "adapter_model.safetensors"))


def test_a_value_carrying_a_secret_is_never_sent(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name = f"leak-{SECRET_KEY}"
    job_id = f"leak-{uuid.uuid4().hex[:6]}"
    config = blob_config(name)
    final = commit_adapter(s3_prefix, job_id, config)
    with pytest.raises(RegistryError, match="name would carry a secret") as info:
        register(config, job_id, final)
    assert SECRET_KEY not in str(info.value)
    assert client().get_experiment_by_name(mlflow_env["MLFLOW_EXPERIMENT_NAME"]) is None


def test_lineage_names_the_hub_commit_and_the_parent_adapter() -> None:
    from arkor_ops.checkpoints import Manifest

    config = validate_config(
        {"name": "child", "model": "m", "dataset": {"type": "huggingface", "name": "org/ds"}}
    )
    manifest = Manifest(
        step=2, config_hash="h", dataset_fingerprint="fp", base_model="m@c0ffee", files=[]
    )
    started = TrainingStarted(
        job_id="child-1",
        metadata={"datasetRevision": "deadbeef", "initAdapter": "s3://b/runs/parent-1/final"},
    )
    got = lineage(
        job_id="child-1",
        config=config,
        manifest=manifest,
        events=[started],
        final_uri="s3://b/runs/child-1/final",
    )
    assert got.dataset_uri == "hf://datasets/org/ds"
    assert got.dataset_version == "deadbeef"
    assert got.tags()["arkor-ops.parent_adapter"] == "s3://b/runs/parent-1/final"
    announced = lineage(
        job_id="child-1",
        config=config,
        manifest=manifest,
        events=[],
        final_uri="s3://b/runs/child-1/final",
        dataset_uri="s3://data/rows.jsonl",
        dataset_version="etag-1",
    )
    assert (announced.dataset_uri, announced.dataset_version) == ("s3://data/rows.jsonl", "etag-1")
    assert "arkor-ops.parent_adapter" not in announced.tags()


def test_step_metrics_keep_the_last_value_of_each_step() -> None:
    got = step_metrics(events("j"))
    assert [(s, v) for s, v, _ in got["train_loss"]] == [(1, 1.9), (2, 1.8), (3, 1.55), (4, 1.45)]
    assert [(s, v) for s, v, _ in got["eval_loss"]] == [(4, 1.9)]
