"""Runs that cannot succeed fail before training, with a clear ``training.failed`` and exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.worker.helpers import (
    ROWS,
    RunDir,
    base_config,
    of_type,
    run_inprocess,
    start_worker,
    write_rows,
)

pytestmark = [pytest.mark.s3]

SECRET = "s3cr3t-bearer-token-do-not-leak"


@pytest.mark.train
def test_bad_rows_fail_before_training_with_row_numbers(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    rows: list[Any] = ROWS["chatml"](8)
    rows[2] = {"messages": [{"role": "bot", "content": "hi"}]}
    rows[4] = {"messages": [{"role": "user", "content": "no answer"}]}
    rows[6] = ["not", "an", "object"]
    path = write_rows(tmp_path / "bad.jsonl", rows)

    code = run_inprocess(
        run_dir.env(base_config(tiny_model_dir, {"type": "file", "path": str(path)}))
    )

    assert code == 2
    events = run_dir.events()
    assert [e.type for e in events] == ["training.failed"]
    error = events[0].error
    assert "3 bad row(s)" in error
    assert "row 3: `messages[0].role` is 'bot'" in error
    assert "row 5: `messages` has no assistant turn" in error
    assert "row 7: expected an object, got list" in error
    assert events[0].step is None

    alpaca = write_rows(tmp_path / "bad.json", [{"instruction": "x", "output": ""}])
    run_dir.event_log.unlink()
    config = base_config(
        tiny_model_dir, {"type": "file", "path": str(alpaca)}, datasetFormat="alpaca"
    )
    assert run_inprocess(run_dir.env(config)) == 2
    assert "row 1: `output` is missing or empty" in run_dir.events()[0].error


def _run_failing(run_dir: RunDir, config: dict[str, Any]) -> tuple[int, str]:
    proc = start_worker(run_dir.env(config))
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr


def test_blob_401_and_404_fail_clearly_without_leaking_the_token(
    run_dir: RunDir, blob_server: Any, tiny_model_dir: Path
) -> None:
    blob_server.token = "the-right-token"
    blob_server.files["/rows.jsonl"] = (b'{"text": "x"}\n', "application/x-ndjson")
    run_dir.extra_env = {"ARKOR_DATASET_TOKEN": SECRET}
    url = blob_server.url("/rows.jsonl?sig=abc")

    code, stderr = _run_failing(run_dir, base_config(tiny_model_dir, {"type": "blob", "url": url}))

    assert code == 2, stderr[-2000:]
    failed = of_type(run_dir.events(), "training.failed")
    assert len(failed) == 1
    assert "answered 401 Unauthorized: the token was refused" in failed[0].error
    assert "sig=abc" not in failed[0].error
    assert blob_server.requests[0]["Authorization"] == f"Bearer {SECRET}"

    blob_server.token = None
    run_dir.extra_env = {"ARKOR_DATASET_TOKEN": SECRET}
    missing = blob_server.url("/missing.jsonl")
    code, stderr2 = _run_failing(
        run_dir, base_config(tiny_model_dir, {"type": "blob", "url": missing})
    )

    assert code == 2
    failed = of_type(run_dir.events(), "training.failed")
    assert "answered 404 Not Found" in failed[-1].error
    assert SECRET not in run_dir.event_log.read_text()
    assert SECRET not in stderr + stderr2
    assert "training failed" in stderr2


def test_environment_and_config_are_checked_first(tmp_path: Path, run_dir: RunDir) -> None:
    env = run_dir.env({"name": "x"})
    env.pop("ARKOR_STORAGE_URI")
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "ARKOR_STORAGE_URI is not set" in stderr

    bad = {"name": "x", "model": "m", "dataset": {"type": "file", "path": "p"}, "lora": {"r": 0}}
    proc = start_worker(run_dir.env(bad))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    failed = run_dir.events()[-1]
    assert failed.type == "training.failed"
    assert "lora.r" in failed.error and "lora.alpha" in failed.error

    cfg = json.loads((run_dir.root / "config.json").read_text())
    cfg.update(model="some-org/not-cached-model", lora={"r": 4, "alpha": 4})
    path = write_rows(tmp_path / "ok.jsonl", ROWS["text"](4))
    cfg["dataset"] = {"type": "file", "path": str(path)}
    cfg["datasetFormat"] = "text"
    proc = start_worker(run_dir.env(cfg))
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "the hub is off (HF_HUB_OFFLINE=1)" in run_dir.events()[-1].error
