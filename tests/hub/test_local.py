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
from tests.fixtures.hub import HubTarget

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
    online: Path, hub: HubTarget, tmp_path: Path
) -> None:
    runs_dir = tmp_path / "runs"
    backend = LocalBackend(LocalSettings(runs_dir=runs_dir, sidecar_linger_seconds=1))
    config = hub.arkor_config(ARKOR_MINIMAL)
    model_head = hub.head("model", hub.model_id)
    dataset_head = hub.head("dataset", hub.dataset["name"])
    server = hub.server  # None on the real Hub: its requests cannot be seen from here

    before = server.mark() if server else 0
    first = create_trainer(**config, backend=backend).wait()
    assert first.job.status == "completed", first.job
    if server is not None:
        got = server.requests()[before:]
        files = {r["path"].rsplit("/", 1)[1] for r in got if r["method"] == "GET"}
        assert {"config.json", "model.safetensors", "tokenizer.json", "train.jsonl"} <= files
        assert "pytorch_model.bin" not in files, "a causal LM needs only safetensors and tokenizer"
        assert all(f"/resolve/{model_head}/" in p for p in server.downloads(hub.model_id))

    meta = _started(runs_dir, first.job.id)
    assert meta["modelRevision"] == model_head
    assert meta["datasetRevision"] == dataset_head
    assert "downloaded from" in meta["modelSource"]
    stored = runs_dir / "storage" / first.job.id / "config.json"
    resolved = json.loads(stored.read_text())["resolved"]
    assert resolved["model"] == {"id": hub.model_id, "revision": None, "commit": model_head}
    assert resolved["dataset"]["commit"] == dataset_head

    again = server.mark() if server else 0
    second = create_trainer(**config, backend=backend).wait()
    assert second.job.status == "completed", second.job
    if server is not None:
        downloaded = [
            r["path"]
            for r in server.requests()[again:]
            if r["method"] == "GET" and "/resolve/" in r["path"]
        ]
        assert downloaded == [], "the second run on this machine must download nothing"
    assert "already in the model cache" in _started(runs_dir, second.job.id)["modelSource"]
