"""The evaluation config: what a user may write, and the error that names a bad field."""

from __future__ import annotations

from typing import Any

import pytest

from arkor_ops.errors import ConfigError
from arkor_ops.evaluation import EvaluationConfig, is_evaluation, validate_evaluation_config

DATASET = {"type": "file", "path": "/data/eval.jsonl"}


def _config(**evaluation: Any) -> dict[str, Any]:
    spec = {"dataset": DATASET, "metrics": ["loss"], **evaluation}
    return {"name": "eval-1", "model": "/models/tiny", "evaluation": spec}


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        validate_evaluation_config(data)
    return dict(info.value.problems)


def test_a_full_config_in_camel_case_loads_with_defaults() -> None:
    config = validate_evaluation_config(
        {
            "name": "eval-1",
            "model": "/models/tiny",
            "adapter": {"kind": "final", "jobId": "run-abc"},
            "evaluation": {
                "dataset": DATASET,
                "metrics": ["loss", "json_valid", "field_match:category", "exact_match"],
                "maxSamples": 10,
                "generation": {"maxNewTokens": 32},
            },
        }
    )
    assert config.adapter is not None and config.adapter.job_id == "run-abc"
    assert config.evaluation.max_samples == 10
    assert config.evaluation.generation.max_new_tokens == 32
    assert not config.evaluation.generation.do_sample  # greedy unless a temperature is given
    wire = config.to_wire()
    assert is_evaluation(wire)
    assert EvaluationConfig.from_wire(wire) == config


def test_unknown_fields_are_refused_by_name() -> None:
    problems = _problems(_config(maxSampels=3))
    assert "evaluation.maxSampels" in problems
    assert "unknown field" in problems["evaluation.maxSampels"]
    problems = _problems({**_config(), "lora": {"r": 8}})
    assert "lora" in problems


@pytest.mark.parametrize(
    ("metric", "says"),
    [
        ("accuracy", "unknown metric 'accuracy'"),
        ("field_match:", "field_match needs a JSON field name"),
        ("field_match:has space", "field_match needs a JSON field name"),
        ("my scorer:fn", "unknown metric"),
        ("pkg.mod:", "unknown metric"),
    ],
)
def test_a_bad_metric_is_named_with_its_position(metric: str, says: str) -> None:
    problems = _problems(_config(metrics=["loss", metric]))
    assert says in problems["evaluation.metrics[1]"], problems


def test_every_metric_kind_is_accepted() -> None:
    metrics = ["loss", "json_valid", "exact_match", "field_match:a.b", "my_pkg.scorers:tone"]
    config = validate_evaluation_config(_config(metrics=metrics))
    assert config.evaluation.metrics == tuple(metrics)


def test_json_schema_needs_a_valid_schema() -> None:
    problems = _problems(_config(metrics=["json_schema"]))
    assert "needs `json_schema`" in problems["evaluation"]
    problems = _problems(_config(metrics=["json_schema"], jsonSchema={"type": "objekt"}))
    assert "not a valid JSON Schema" in problems["evaluation"]
    problems = _problems(_config(metrics=["loss"], json_schema={"type": "object"}))
    assert "is not listed" in problems["evaluation"]
    config = validate_evaluation_config(
        _config(metrics=["json_schema"], json_schema={"type": "object", "required": ["a"]})
    )
    assert config.evaluation.json_schema == {"type": "object", "required": ["a"]}


def test_bounds_and_the_dataset_are_checked() -> None:
    assert "evaluation.max_samples" in _problems(_config(max_samples=0))
    assert "evaluation.metrics" in _problems(_config(metrics=[]))
    assert "evaluation" in _problems(_config(metrics=["loss", "loss"]))
    problems = _problems(_config(dataset={"type": "s3", "uri": "not-s3"}))
    assert "evaluation.dataset.uri" in problems
    problems = _problems({**_config(), "adapter": {"kind": "checkpoint", "jobId": "run-1"}})
    assert "needs its step" in problems["adapter"]


def test_blob_credentials_stay_out_of_the_wire_form() -> None:
    data = _config(
        dataset={"type": "blob", "url": "https://x.test/e.jsonl?sig=abc", "token": "t0k"}
    )
    config = validate_evaluation_config(data)
    wire = config.to_wire()
    assert "t0k" not in str(wire) and "sig=abc" not in str(wire)
    env = config.secret_env()
    again = EvaluationConfig.from_wire(wire, env)
    assert again.secret_env() == env
