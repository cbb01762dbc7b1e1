"""The evaluation stage of the real worker, on the tiny model, with storage on moto's S3 server.

A trained adapter scores a lower held-out loss than the base model on the same rows; every
sample's prompt, reference, answer and scores are in the committed ``samples.jsonl``. A user
scorer that raises fails the job naming the scorer and the sample, with nothing committed; one
that cannot be imported fails before the model is loaded. An adapter ref to nothing fails
naming the ref. SIGTERM stops between samples with ``evaluation.cancelled`` and no results.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.storage import MANIFEST_NAME, join_uri, open_storage
from arkor_ops.worker.errors import EXIT_OK, EXIT_PERMANENT
from tests.worker.helpers import (
    GRACE_SECONDS,
    RunDir,
    base_config,
    of_type,
    run_inprocess,
    start_worker,
    wait_for,
    write_rows,
)

pytestmark = [pytest.mark.s3, pytest.mark.train, pytest.mark.timeout(600)]

CATEGORIES = ("billing", "account", "bug", "feature")


def json_rows(n: int) -> list[dict[str, Any]]:
    """Chats whose answers are JSON, so that JSON metrics have something to score."""
    return [
        {
            "messages": [
                {"role": "user", "content": f"Ticket {i}: triage this please"},
                {"role": "assistant", "content": json.dumps({"category": CATEGORIES[i % 4]})},
            ]
        }
        for i in range(n)
    ]


def evaluate_inprocess(env: dict[str, str]) -> int:
    from arkor_ops.worker.evaluate import evaluate
    from arkor_ops.worker.settings import load_settings

    settings = load_settings(env)
    assert settings.stage == "evaluation"
    return evaluate(settings)


def eval_config(model: Path, rows: Path, **spec: Any) -> dict[str, Any]:
    evaluation = {
        "dataset": {"type": "file", "path": str(rows)},
        "metrics": ["loss", "json_valid", "field_match:category"],
        "generation": {"maxNewTokens": 12},
        **spec,
    }
    return {"kind": "evaluation", "name": "eval", "model": str(model), "evaluation": evaluation}


def _samples(run: RunDir) -> list[dict[str, Any]]:
    storage = open_storage(run.storage_uri)
    text = storage.get_bytes(join_uri(run.layout().evaluation, "samples.jsonl")).decode()
    return [json.loads(line) for line in text.splitlines()]


def _committed(run: RunDir) -> bool:
    uri = join_uri(run.layout().evaluation, MANIFEST_NAME)
    return open_storage(run.storage_uri).exists(uri)


def test_an_adapter_scores_a_lower_loss_than_its_base_model(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(32))
    parent = RunDir(tmp_path / "train", "train-1", s3_prefix)
    train = base_config(
        tiny_model_dir, {"type": "file", "path": str(rows)}, maxSteps=30, learningRate=0.02
    )
    assert run_inprocess(parent.env({**train, "saveSteps": 15})) == EXIT_OK

    scores = {}
    for name, adapter in (("base", None), ("tuned", {"kind": "final", "jobId": "train-1"})):
        run = RunDir(tmp_path / name, f"eval-{name}", s3_prefix)
        config = eval_config(tiny_model_dir, rows, maxSamples=6)
        if adapter:
            config["adapter"] = adapter
        assert evaluate_inprocess(run.env(config)) == EXIT_OK, run.events()
        events = run.events()
        assert events[0].type == "evaluation.started"
        assert events[0].metadata["samples"] == 6
        progress = of_type(events, "evaluation.progress")
        assert progress[-1].done == progress[-1].total == 6
        done = events[-1]
        assert done.type == "evaluation.completed" and done.samples == 6
        assert done.uri == run.layout().evaluation and _committed(run)
        assert set(done.metrics) == {"loss", "json_valid", "field_match:category"}
        assert all(0 <= done.metrics[m] <= 1 for m in ("json_valid", "field_match:category"))
        samples = _samples(run)
        assert [s["index"] for s in samples] == list(range(6))
        assert samples[1]["prompt"][-1]["content"] == "Ticket 1: triage this please"
        assert samples[1]["reference"] == '{"category": "account"}'
        assert set(samples[1]["scores"]) == {"json_valid", "field_match:category"}
        assert isinstance(samples[1]["answer"], str) and samples[1]["loss"] > 0
        mean_json = sum(s["scores"]["json_valid"] for s in samples) / 6
        assert done.metrics["json_valid"] == pytest.approx(mean_json)
        scores[name] = done.metrics["loss"]
    tuned_run = RunDir(tmp_path / "tuned", "eval-tuned", s3_prefix)
    tuned = of_type(tuned_run.events(), "evaluation.started")
    assert tuned[0].metadata["adapter"] == parent.layout().final
    assert tuned[0].metadata["adapterStep"] == 30
    assert scores["tuned"] < scores["base"] - 0.3, scores


def _scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "eval_scorers.py").write_text(
        "def picky(prompt, answer, reference):\n"
        "    raise ValueError(f'cannot read {reference!r}')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "eval_scorers", raising=False)


def test_a_scorer_that_raises_fails_the_job_naming_it(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scorers(tmp_path, monkeypatch)
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(4))
    run = RunDir(tmp_path / "run", "eval-bad", s3_prefix)
    config = eval_config(tiny_model_dir, rows, metrics=["json_valid", "eval_scorers:picky"])
    assert evaluate_inprocess(run.env(config)) == EXIT_PERMANENT
    failed = run.events()[-1]
    assert failed.type == "evaluation.failed"
    assert "scorer eval_scorers:picky failed: ValueError: cannot read" in failed.error
    assert "(sample 1)" in failed.error
    assert not _committed(run)


def test_a_scorer_that_cannot_be_imported_fails_before_the_model_loads(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(4))
    run = RunDir(tmp_path / "run", "eval-missing", s3_prefix)
    config = eval_config(tiny_model_dir, rows, metrics=["no_such_scorers:score"])
    assert evaluate_inprocess(run.env(config)) == EXIT_PERMANENT
    assert [e.type for e in run.events()] == ["evaluation.failed"]
    assert "scorer no_such_scorers:score: cannot import no_such_scorers" in run.events()[0].error


def test_an_adapter_that_is_not_committed_is_refused(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(4))
    run = RunDir(tmp_path / "run", "eval-nothing", s3_prefix)
    config = {**eval_config(tiny_model_dir, rows), "adapter": {"jobId": "no-run", "step": 5}}
    assert evaluate_inprocess(run.env(config)) == EXIT_PERMANENT
    (failed,) = run.events()
    assert failed.type == "evaluation.failed"
    assert failed.error.startswith("adapter: nothing is committed at ")
    assert "no-run/checkpoints/step-00000005" in failed.error


def test_sigterm_cancels_between_samples_with_nothing_committed(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(400))
    run = RunDir(tmp_path / "run", "eval-cancel", s3_prefix)
    run.extra_env["ARKOR_CANCEL_GRACE_SECONDS"] = str(GRACE_SECONDS)
    config = eval_config(tiny_model_dir, rows, generation={"maxNewTokens": 64})
    proc = start_worker(run.env(config))
    try:
        wait_for(run, lambda ev: of_type(ev, "evaluation.progress"), proc, timeout=240)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == EXIT_OK
    finally:
        if proc.poll() is None:
            proc.kill()
    events = run.events()
    cancelled = events[-1]
    assert cancelled.type == "evaluation.cancelled"
    assert 1 <= cancelled.done < 400
    assert not of_type(events, "evaluation.completed")
    assert not _committed(run)


def test_bad_settings_and_a_bad_config_end_the_log_as_an_evaluation(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", json_rows(4))
    run = RunDir(tmp_path / "run", "eval-env", s3_prefix)
    env = run.env(eval_config(tiny_model_dir, rows))
    env.pop("ARKOR_STORAGE_URI")
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PERMANENT and "ARKOR_STORAGE_URI is not set" in stderr
    assert [e.type for e in run.events()] == ["evaluation.failed"]

    other = RunDir(tmp_path / "other", "eval-config", s3_prefix)
    config = eval_config(tiny_model_dir, rows, metrics=["accuracy"])
    assert evaluate_inprocess(other.env(config)) == EXIT_PERMANENT
    (failed,) = other.events()
    assert failed.type == "evaluation.failed"
    assert "evaluation.metrics[0]" in failed.error and "unknown metric 'accuracy'" in failed.error


def test_answers_stop_where_the_chat_template_ends_an_assistant_turn(tiny_model_dir: Path) -> None:
    # A base model's generation config names only <eos>; a model trained on chats closes its
    # answer with <end_of_turn> and, without stopping there, writes on: the demo's adapter gave
    # the right triage JSON and then more text, so json_valid and field_match scored it 0.
    from transformers import AutoTokenizer

    from arkor_ops.evaluation import validate_evaluation_config
    from arkor_ops.worker.evaluate import _Model

    rows = write_rows(tiny_model_dir.parent / "stop-rows.jsonl", json_rows(2))
    config = validate_evaluation_config(eval_config(tiny_model_dir, rows))
    model = _Model(tiny_model_dir, None, config)
    end_of_turn = AutoTokenizer.from_pretrained(tiny_model_dir).convert_tokens_to_ids(
        "<end_of_turn>"
    )
    assert end_of_turn in model.generation.eos_token_id
    assert model.tok.eos_token_id in model.generation.eos_token_id
