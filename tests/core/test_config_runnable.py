"""Configs that validate must be able to run: each value Hugging Face or numpy would refuse in
the pod (after a retry on the GPU) is refused by ``create_trainer``, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from arkor_ops.config import TrainerConfig, validate_config
from arkor_ops.errors import ConfigError

BASE: dict[str, Any] = {
    "name": "runnable",
    "model": "unsloth/gemma-3-270m-it",
    "dataset": {"type": "file", "path": "rows.jsonl"},
}

REFUSED = [
    ({"seed": 2**32}, "seed"),
    ({"seed": -1}, "seed"),
    ({"datasetSplit": {"enabled": True, "seed": 2**40}}, "datasetSplit.seed"),
    ({"loggingSteps": 0}, "loggingSteps"),
    ({"saveSteps": 0}, "saveSteps"),
    ({"evalSteps": {"steps": 0}}, "evalSteps"),
    ({"loggingSteps": {"ratio": 0.0}}, "loggingSteps"),
    ({"numTrainEpochs": float("inf")}, "numTrainEpochs"),
    ({"numTrainEpochs": float("nan")}, "numTrainEpochs"),
    ({"learningRate": float("nan")}, "learningRate"),
    ({"weightDecay": float("nan")}, "weightDecay"),
    ({"warmupSteps": float("nan")}, "warmupSteps"),
    ({"lora": {"r": 8, "alpha": 8, "dropout": float("nan")}}, "lora.dropout"),
    ({"datasetSplit": {"enabled": True, "testSize": float("nan")}}, "datasetSplit.testSize"),
    ({"maxSteps": 10**12}, "maxSteps"),
    ({"model": "org/" + "m" * 300}, "model"),
    ({"model": "m/" * 1100}, "model"),
    ({"model": "org/mo\x07del"}, "model"),
    ({"optim": "adamw"}, "optim"),
    ({"lrSchedulerType": "cosine_with_min_lr"}, "lrSchedulerType"),
    ({"lrSchedulerType": "reduce_lr_on_plateau"}, "reduce_lr_on_plateau needs an eval split"),
    ({"lrSchedulerType": "greedy"}, "greedy needs an eval split"),
]


@pytest.mark.parametrize(("extra", "field"), REFUSED, ids=[json.dumps(e)[:60] for e, _ in REFUSED])
def test_a_value_the_pod_cannot_run_is_refused_naming_the_field(
    extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({**BASE, **extra})
    assert field in str(info.value)


def test_infinity_in_the_wire_form_is_refused_by_the_worker_too() -> None:
    wire = json.loads('{"numTrainEpochs": Infinity, "learningRate": NaN}')
    with pytest.raises(ConfigError) as info:
        TrainerConfig.from_wire({**BASE, **wire})
    assert "numTrainEpochs" in str(info.value)
    assert "learningRate" in str(info.value)


@pytest.mark.parametrize(
    "extra",
    [
        {"warmupSteps": 0},  # Hugging Face's default: no warm-up
        {"warmupSteps": {"ratio": 0.0}},
        {"seed": 0},
        {"seed": 2**32 - 1},
        {"loggingSteps": 1, "saveSteps": {"ratio": 0.25}},
        {"lrSchedulerType": "reduce_lr_on_plateau", "datasetSplit": {"enabled": True}},
    ],
)
def test_edge_values_that_run_are_accepted(extra: dict[str, Any]) -> None:
    validate_config({**BASE, **extra})
