"""The retraining loop closed: train, evaluate the new version and the champion on the same
held-out set, promote only what is better. A real Prefect server, a real MLflow server, the local
backend and the tiny model; assertions read MLflow with its own client.

- v1 is trained on the triage rows: the first version promotes itself.
- v2 is trained on a dataset update that teaches nothing about triage (greetings, two steps):
  its held-out loss is worse, so the champion is kept, the reason names both values, and the
  champion is not scored again (MLflow holds its scores on exactly this set).
- An evaluation whose scorer cannot be loaded fails the flow run with the scorer's error and
  promotes nothing.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.flows.helpers import tiny_config
from tests.flows.test_local_backend import local_env  # noqa: F401 - fixture
from tests.local.helpers import REPO

pytestmark = [
    pytest.mark.prefect,
    pytest.mark.mlflow,
    pytest.mark.train,
    pytest.mark.timeout(900),
]

TRAIN_ROWS = REPO / "examples" / "triage" / "train.jsonl"
TEST_ROWS = REPO / "examples" / "triage" / "test.jsonl"


def _evaluation(*metrics: str) -> dict[str, Any]:
    return {
        "dataset": {"type": "file", "path": str(TEST_ROWS)},
        "metrics": list(metrics) or ["loss", "json_valid"],
        "maxSamples": 4,
        "generation": {"maxNewTokens": 16},
    }


def _evaluation_runs(runs: Path) -> list[str]:
    """The local runs that were evaluation jobs (their config says so)."""
    found = []
    for config in runs.glob("*/config.json"):
        if json.loads(config.read_text()).get("kind") == "evaluation":
            found.append(config.parent.name)
    return found


async def test_the_better_version_is_promoted_and_a_worse_one_is_not(
    prefect_server: str,
    local_env: dict[str, Any],  # noqa: F811
    tiny_model_dir: Path,
    mlflow_env: dict[str, str],
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    from arkor_ops.flows.fine_tune import fine_tune

    name = f"gate-{uuid.uuid4().hex[:6]}"
    runs = Path(local_env["runs"])
    base = tiny_config(str(TRAIN_ROWS), model=str(tiny_model_dir), name=name)
    trained = {**base, "maxSteps": 16, "learningRate": 0.01, "lora": {"r": 4, "alpha": 8}}
    first = await fine_tune(
        config=trained,
        backend={"backend": "local"},
        dataset_uri=str(TRAIN_ROWS),
        dataset_version="v1",
        evaluation=_evaluation(),
        return_state=True,
    )
    assert first.is_completed(), first.message
    assert first.message.startswith("promoted"), first.message
    gate = (await first.result())["promotion"]
    assert (gate["promoted"], gate["version"], gate["champion"]) == (True, "1", "1")
    client = MlflowClient()
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == "1" and champion.tags["arkor-ops.promoted_by"] == "gate"
    assert len(_evaluation_runs(runs)) == 1  # no champion yet: only the new version scored

    greetings = tmp_path / "greetings.jsonl"
    row = '{"messages":[{"role":"user","content":"hi %d"},{"role":"assistant","content":"hey"}]}'
    greetings.write_text("\n".join(row % i for i in range(8)) + "\n")
    second = await fine_tune(
        config={**base, "maxSteps": 2, "learningRate": 0.0001},
        backend={"backend": "local"},
        dataset_uri=str(greetings),
        dataset_version="v2",
        evaluation=_evaluation(),
        return_state=True,
    )
    assert second.is_completed(), second.message
    gate = (await second.result())["promotion"]
    assert gate["promoted"] is False and gate["champion"] == "1", gate
    assert second.message.startswith("kept champion v1: loss "), second.message
    assert gate["challenger_value"] > gate["champion_value"], gate
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    v2 = client.get_model_version(name, "2")  # registered as a candidate all the same
    assert v2.tags["arkor-ops.dataset_version"] == "v2"
    assert len(_evaluation_runs(runs)) == 2  # the champion's scores on this set were reused

    third = await fine_tune(
        config={**base, "maxSteps": 2},
        backend={"backend": "local"},
        dataset_uri=str(greetings),
        dataset_version="v3",
        evaluation=_evaluation("loss", "json:no_such_scorer"),
        return_state=True,
    )
    assert third.is_failed()
    assert "json:no_such_scorer" in (third.message or ""), third.message
    assert client.get_model_version_by_alias(name, "champion").version == "1"
