"""The Arkor docs' minimal trainer, unchanged but for a tiny ``maxSteps``, on the local backend:
model and dataset come from the hub (through ``HF_ENDPOINT``), pinned to commits, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arkor_ops import create_trainer
from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.eventlog import read_events
from tests.fixtures.hub import DATASET_ID, MODEL_ID, HubServer

pytestmark = [pytest.mark.hub, pytest.mark.train, pytest.mark.timeout(900)]

#: https://arkor docs, "minimal trainer" (maxSteps made tiny for a test).
ARKOR_MINIMAL: dict[str, Any] = {
    "name": "triage-run",
    "model": "unsloth/gemma-4-E4B-it",
    "dataset": {"type": "huggingface", "name": "arkorlab/triage-demo"},
    "maxSteps": 2,
}


def _started(runs_dir: Path, job_id: str) -> dict[str, Any]:
    events = read_events(runs_dir / job_id / "events.jsonl")
    return next(e.metadata for e in events if e.type == "training.started")


def test_arkor_minimal_example_downloads_model_and_dataset_once(
    online: Path, hub_server: HubServer, tmp_path: Path
) -> None:
    runs_dir = tmp_path / "runs"
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    model_head = hub_server.model_repo(MODEL_ID).head()
    dataset_head = hub_server.dataset_repo(DATASET_ID).head()

    before = hub_server.mark()
    first = create_trainer(**ARKOR_MINIMAL, backend=backend).wait()
    assert first.job.status == "completed", first.job
    got = hub_server.requests()[before:]
    files = {r["path"].rsplit("/", 1)[1] for r in got if r["method"] == "GET"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "train.jsonl"} <= files
    assert "pytorch_model.bin" not in files, "a causal LM needs only safetensors and tokenizer"
    assert all(f"/resolve/{model_head}/" in p for p in hub_server.downloads(MODEL_ID))

    meta = _started(runs_dir, first.job.id)
    assert meta["modelRevision"] == model_head
    assert meta["datasetRevision"] == dataset_head
    assert "downloaded from" in meta["modelSource"]
    stored = runs_dir / "storage" / first.job.id / "config.json"
    resolved = json.loads(stored.read_text())["resolved"]
    assert resolved["model"] == {"id": MODEL_ID, "revision": None, "commit": model_head}
    assert resolved["dataset"]["commit"] == dataset_head

    again = hub_server.mark()
    second = create_trainer(**ARKOR_MINIMAL, backend=backend).wait()
    assert second.job.status == "completed", second.job
    downloaded = [
        r["path"]
        for r in hub_server.requests()[again:]
        if r["method"] == "GET" and "/resolve/" in r["path"]
    ]
    assert downloaded == [], "the second run on this machine must download nothing"
    assert "already in the model cache" in _started(runs_dir, second.job.id)["modelSource"]
