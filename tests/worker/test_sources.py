"""Every dataset source and row format trains the tiny model to completion (in-process runs).

Storage is the real S3-protocol server on loopback; the blob source is a local HTTP server that
checks the bearer token; the Hugging Face source is a ``save_to_disk`` folder or a folder in the
Hub layout (no hub is reachable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.s3 import S3Server
from tests.worker.helpers import (
    ROWS,
    RunDir,
    assert_completed,
    base_config,
    run_inprocess,
    write_rows,
)

pytestmark = [pytest.mark.s3, pytest.mark.train]

TOKEN = "blob-token-7f3a9c"


def _hf_save_to_disk(tmp: Path, fmt: str) -> dict[str, Any]:
    import datasets

    folder = tmp / "hf-saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[fmt]())}).save_to_disk(folder)
    return {"type": "huggingface", "name": str(folder), "split": "train"}


def _hf_hub_layout(tmp: Path, fmt: str) -> dict[str, Any]:
    folder = tmp / "hf-hub" / "triage-demo"
    write_rows(folder / "data" / "train-00000-of-00001.parquet", ROWS[fmt]())
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# triage demo\n")
    return {"type": "huggingface", "name": str(folder), "split": "train"}


CASES = [
    # (source, file kind, row format)
    ("file", "jsonl", "chatml"),
    ("huggingface-saved", "", "alpaca"),
    ("huggingface-hub", "", "text"),
    ("blob", "jsonl", "chatml"),
    ("blob", "json", "alpaca"),
    ("blob", "csv", "chatml"),
    ("blob", "parquet", "text"),
    ("s3", "jsonl", "chatml"),
    ("s3", "parquet", "alpaca"),
]


@pytest.mark.parametrize(
    ("source", "kind", "fmt"), CASES, ids=[f"{s}-{k or 'hf'}-{f}" for s, k, f in CASES]
)
def test_source_and_format_train_to_completion(
    source: str,
    kind: str,
    fmt: str,
    *,
    tmp_path: Path,
    run_dir: RunDir,
    tiny_model_dir: Path,
    blob_server: Any,
    s3_server: S3Server,
    s3_bucket: str,
) -> None:
    extra_env: dict[str, str] = {}
    if source == "file":
        dataset = {"type": "file", "path": str(write_rows(tmp_path / f"rows.{kind}", ROWS[fmt]()))}
    elif source == "huggingface-saved":
        dataset = _hf_save_to_disk(tmp_path, fmt)
    elif source == "huggingface-hub":
        dataset = _hf_hub_layout(tmp_path, fmt)
    elif source == "blob":
        local = write_rows(tmp_path / f"rows.{kind}", ROWS[fmt]())
        blob_server.token = TOKEN
        blob_server.files[f"/datasets/rows.{kind}"] = (
            local.read_bytes(),
            "application/octet-stream",
        )
        dataset = {"type": "blob", "url": blob_server.url(f"/datasets/rows.{kind}")}
        extra_env["ARKOR_DATASET_TOKEN"] = TOKEN
    else:
        local = write_rows(tmp_path / f"rows.{kind}", ROWS[fmt]())
        s3_server.client().upload_file(str(local), s3_bucket, f"data/rows.{kind}")
        dataset = {"type": "s3", "uri": f"s3://{s3_bucket}/data/rows.{kind}"}
    run_dir.extra_env = extra_env
    config = base_config(tiny_model_dir, dataset, datasetFormat=fmt)
    if fmt == "chatml" and source == "s3":
        config["trainOnResponsesOnly"] = True

    assert run_inprocess(run_dir.env(config)) == 0, [e.type for e in run_dir.events()]

    assert_completed(run_dir, max_steps=6, save_steps=3, rows=24)
    started = run_dir.events()[0].metadata
    assert started["trainerBackend"] == "trl"
    assert started["resumedFromStep"] is None
    assert started["datasetFormat"] == fmt
    if source == "blob":
        assert blob_server.requests and all(
            r.get("Authorization") == f"Bearer {TOKEN}" for r in blob_server.requests
        )


def test_dry_run_caps_rows_and_steps_and_seeds_the_log(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    """A dry run: at most 50 rows and 10 steps, the whole pipeline. The log continues the one a
    previous pod persisted to storage (ids stay monotonic)."""
    from arkor_ops.storage import open_storage

    prior = b'{"id":1,"type":"job.phase","jobId":"job-1","phase":"running"}\n'
    prior += b'{"id":2,"type":"job.phase","jobId":"job-1","phase":"running"}\n'
    open_storage(run_dir.storage_uri).put_bytes(run_dir.layout().events, prior)
    path = write_rows(tmp_path / "many.jsonl", ROWS["chatml"](120))
    config = base_config(
        tiny_model_dir, {"type": "file", "path": str(path)}, maxSteps=500, saveSteps=5, dryRun=True
    )

    assert run_inprocess(run_dir.env(config)) == 0

    events = run_dir.events()
    assert [e.id for e in events][:3] == [1, 2, 3]
    run_dir.event_log.write_text(
        "".join(line + "\n" for line in run_dir.event_log.read_text().splitlines()[2:])
    )
    assert_completed(run_dir, max_steps=10, save_steps=5, rows=50)
    assert events[2].metadata["dryRun"] is True
