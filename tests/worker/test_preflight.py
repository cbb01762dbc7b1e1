"""The CPU pre-flight (``ARKOR_PREFLIGHT=1``): what would fail on a GPU fails here, named.

Each case runs the real worker (in this process, or as ``python -m arkor_ops.worker``) on the
tiny model against the S3-protocol server; the pre-flight's log must land in storage, where
the GPU pod's worker continues it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.eventlog import iter_log_lines
from arkor_ops.storage import join_uri, open_storage
from tests.fixtures.s3 import LoggedS3
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


def _preflight(run_dir: RunDir, config: dict[str, Any]) -> int:
    from arkor_ops.worker.preflight import preflight
    from arkor_ops.worker.settings import load_settings

    return preflight(load_settings({**run_dir.env(config), "ARKOR_PREFLIGHT": "1"}))


def _stored(run_dir: RunDir) -> list[dict[str, Any]]:
    layout = run_dir.layout()
    return list(iter_log_lines(open_storage(layout.events).get_bytes(layout.events)))


def test_bad_rows_fail_the_preflight_with_their_numbers(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    rows: list[Any] = ROWS["chatml"](8)
    rows[2] = {"messages": [{"role": "bot", "content": "hi"}]}
    rows[6] = {"messages": [{"role": "user", "content": "no answer"}]}
    path = write_rows(tmp_path / "bad.jsonl", rows)
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)})
    run_dir.extra_env["ARKOR_PREFLIGHT"] = "1"

    proc = start_worker(run_dir.env(config))
    _, stderr = proc.communicate(timeout=240)

    assert proc.returncode == 2, stderr  # never retried: the Job's pod failure policy
    events = run_dir.events()
    assert [e.type for e in events] == ["job.phase", "training.failed"]
    assert events[0].phase == "preflight"
    error = events[1].error
    assert error.startswith("pre-flight: 2 bad row(s)"), error
    assert "row 3: `messages[0].role` is 'bot'" in error
    assert "row 7: `messages` has no assistant turn" in error
    assert [e["type"] for e in _stored(run_dir)] == ["job.phase", "training.failed"]


def test_passing_preflight_previews_rows_and_the_gpu_run_continues_its_log(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "train.jsonl", ROWS["chatml"](10))
    config = base_config(
        tiny_model_dir,
        {"type": "file", "path": str(path)},
        trainOnResponsesOnly=True,
        maxSteps=2,
        saveSteps=2,
        lora={"r": 4, "alpha": 8, "maxLength": 46},
    )
    run_dir.extra_env["ARKOR_GPU_TYPE"] = "NVIDIA-A100-SXM4-80GB"  # the Job sets it from settings

    assert _preflight(run_dir, config) == 0

    phase, passed = run_dir.events()
    assert (phase.type, phase.phase, passed.type) == ("job.phase", "preflight", "preflight.passed")
    assert passed.rows == 10
    assert passed.max_length == 46
    assert len(passed.preview) == 3
    first = passed.preview[0]
    assert first.row == 1
    assert "Ticket 0: my invoice was charged twice" in first.text
    assert "category: billing" in first.text
    # only the assistant turn is trained: fewer tokens than the row, more than none
    assert first.trained_tokens is not None
    assert 0 < first.trained_tokens < first.tokens
    assert passed.tokens >= sum(p.tokens for p in passed.preview)
    assert 0 < passed.truncated_rows < 10, "rows over 46 tokens are counted"
    assert passed.untrained_rows == 0
    assert passed.model_bytes == sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    assert passed.gpu_memory_gib == 74.5
    assert passed.memory_estimate_gib is not None
    assert 1.0 <= passed.memory_estimate_gib < passed.gpu_memory_gib  # CUDA's 1 GiB: a tiny model
    assert [e["type"] for e in _stored(run_dir)] == ["job.phase", "preflight.passed"]

    # The GPU pod starts with an empty log: it seeds from storage and goes on from id 3.
    run_dir.event_log.unlink()
    assert run_inprocess(run_dir.env(config)) == 0
    events = run_dir.events()
    assert [e.type for e in events[:3]] == ["job.phase", "preflight.passed", "training.started"]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "training.completed"


def test_a_model_too_big_for_the_gpu_type_fails_the_preflight(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    path = write_rows(tmp_path / "train.jsonl", ROWS["chatml"](4))
    config = base_config(tiny_model_dir, {"type": "file", "path": str(path)})
    run_dir.extra_env["ARKOR_GPU_MEMORY_GIB"] = "0.5"  # below CUDA's own share: nothing loads

    assert _preflight(run_dir, config) == 2

    events = run_dir.events()
    assert [e.type for e in events] == ["job.phase", "training.failed"]
    error = events[-1].error
    assert error.startswith(f"pre-flight: model {str(tiny_model_dir)!r} needs about 1.0 GiB"), error
    assert "the run's GPU has 0.5 GiB: use lora.loadIn4bit, a GPU type with more memory" in error


def test_missing_s3_model_fails_the_preflight_naming_it(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path, s3_prefix: str
) -> None:
    path = write_rows(tmp_path / "train.jsonl", ROWS["chatml"](4))
    missing = f"{s3_prefix}/models/no-such-model"
    config = base_config(Path(missing), {"type": "file", "path": str(path)})
    config["model"] = missing

    assert _preflight(run_dir, config) == 2

    failed = of_type(run_dir.events(), "training.failed")
    assert len(failed) == 1
    assert f"model {missing} does not exist" in failed[0].error


def test_s3_model_is_checked_without_downloading_its_weights(
    tmp_path: Path, tiny_model_dir: Path, logged_s3: LoggedS3
) -> None:
    uri = join_uri(f"s3://{logged_s3.bucket}", "models", "tiny")
    storage = open_storage(uri)
    for file in tiny_model_dir.iterdir():
        storage.put_file(join_uri(uri, file.name), file)
    run_dir = RunDir(tmp_path / "run", "job-s3-model", f"s3://{logged_s3.bucket}/runs")
    path = write_rows(tmp_path / "train.jsonl", ROWS["alpaca"](4))
    config = base_config(
        tiny_model_dir, {"type": "file", "path": str(path)}, datasetFormat="alpaca"
    )
    config["model"] = uri

    assert _preflight(run_dir, config) == 0

    passed = of_type(run_dir.events(), "preflight.passed")[0]
    assert passed.model_bytes == sum(p.stat().st_size for p in tiny_model_dir.glob("*.safetensors"))
    assert passed.preview[0].trained_tokens is None, "every token is trained"
    assert logged_s3.downloads(join_uri(uri, "config.json")) == 1
    assert logged_s3.downloads(join_uri(uri, "model.safetensors")) == 0, "no weights moved"


def test_template_without_assistant_markers_fails_responses_only_training(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    from transformers import AutoTokenizer

    model = shutil.copytree(tiny_model_dir, tmp_path / "plain-template")
    tok = AutoTokenizer.from_pretrained(str(model))
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(str(model))
    path = write_rows(tmp_path / "train.jsonl", ROWS["chatml"](4))
    config = base_config(model, {"type": "file", "path": str(path)}, trainOnResponsesOnly=True)

    assert _preflight(run_dir, config) == 2

    error = of_type(run_dir.events(), "training.failed")[0].error
    assert "marks no assistant tokens" in error
    assert "TRL has no training version" in error
    assert "train_on_responses_only" in error

    # The same model without response-only training passes.
    run_dir.event_log.unlink()
    open_storage(run_dir.storage_uri).delete_prefix(run_dir.layout().root)
    config["trainOnResponsesOnly"] = False
    assert _preflight(run_dir, config) == 0


def test_responses_cut_off_by_max_length_fail_the_preflight(
    tmp_path: Path, run_dir: RunDir, tiny_model_dir: Path
) -> None:
    """Prompts longer than max_length: truncation would leave the run nothing to train."""
    path = write_rows(tmp_path / "train.jsonl", ROWS["chatml"](6))
    config = base_config(
        tiny_model_dir,
        {"type": "file", "path": str(path)},
        trainOnResponsesOnly=True,
        lora={"r": 4, "alpha": 8, "maxLength": 24},
    )

    assert _preflight(run_dir, config) == 2

    error = of_type(run_dir.events(), "training.failed")[0].error
    assert "with max_length 24: every row's response starts after token 24" in error
    assert "raise lora.maxLength" in error
