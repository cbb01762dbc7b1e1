"""Lineage queries, evaluations and the champion alias against the real tracking server, read
back with MLflow's own client."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from arkor_ops.errors import ModelNotFoundError, RegistryError
from arkor_ops.models import (
    champion,
    describe_model,
    evaluation_of,
    find_trained,
    list_models,
    promote,
    record_evaluation,
)
from arkor_ops.registry import RegistrySettings
from tests.registry.test_register_run import blob_config, client, commit_adapter, register

pytestmark = [pytest.mark.mlflow, pytest.mark.s3]


def versions(s3_prefix: str, datasets: list[tuple[str, str]]) -> tuple[str, list[Any]]:
    """A fresh model with one registered version per ``(dataset_uri, dataset_version)``."""
    name = f"models-{uuid.uuid4().hex[:6]}"
    config = blob_config(name)
    out = []
    for i, (uri, version) in enumerate(datasets):
        job_id = f"{name}-j{i}"
        final = commit_adapter(s3_prefix, job_id, config)
        out.append(register(config, job_id, final, dataset_uri=uri, dataset_version=version))
    return name, out


def test_a_trained_dataset_version_is_found_from_the_lineage_tags(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    quoted = 's3://data/it\'s "odd".jsonl'
    name, got = versions(
        s3_prefix,
        [
            ("s3://data/rows.jsonl", "etag-1"),
            ("s3://data/rows.jsonl", "etag-2"),
            (quoted, "v'1"),
            ("https://user:pw@data.example.com/rows.jsonl", "e1"),
        ],
    )
    settings = RegistrySettings()
    first = find_trained(settings, name, "s3://data/rows.jsonl", "etag-1")
    assert first is not None and first.version == got[0].version == "1"
    assert first.lineage["job_id"] == f"{name}-j0"
    second = find_trained(settings, name, "s3://data/rows.jsonl", "etag-2")
    assert second is not None and second.version == "2"
    assert find_trained(settings, name, "s3://data/rows.jsonl", "etag-3") is None
    assert find_trained(settings, name, "s3://data/other.jsonl", "etag-1") is None
    odd = find_trained(settings, name, quoted, "v'1")
    assert odd is not None and odd.version == "3"
    # the tag holds the URL without its credentials; asking with or without them finds it
    for uri in (
        "https://user:pw@data.example.com/rows.jsonl",
        "https://data.example.com/rows.jsonl",
    ):
        found = find_trained(settings, name, uri, "e1")
        assert found is not None and found.version == "4"
    assert (
        find_trained(settings, f"nobody-{uuid.uuid4().hex[:6]}", "s3://data/rows.jsonl", "x")
        is None
    )


def test_promotion_moves_the_alias_and_records_who_why_and_what_it_replaced(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2")])
    settings = RegistrySettings()
    assert champion(settings, name) is None

    first = promote(settings, name, "1", reason="promoted v1: first version (loss 1.45)", by="gate")
    assert first.changed and first.previous is None
    second = promote(settings, name, "2", reason="hotfix for ticket 42", by="person:alice")
    assert second.changed and second.previous == "1"

    mlflow = client()
    assert mlflow.get_model_version_by_alias(name, "champion").version == "2"
    v2 = mlflow.get_model_version(name, "2").tags
    assert v2["arkor-ops.promoted_by"] == "person:alice"
    assert v2["arkor-ops.promotion_reason"] == "hotfix for ticket 42"
    assert v2["arkor-ops.previous_champion"] == "1"
    assert v2["arkor-ops.promoted_at"].endswith("Z")
    v1 = mlflow.get_model_version(name, "1").tags
    assert v1["arkor-ops.promoted_by"] == "gate"
    assert v1["arkor-ops.superseded_by"] == "2" and "arkor-ops.previous_champion" not in v1
    # the lineage tags are untouched
    assert v1["arkor-ops.dataset_version"] == "1" and v2["arkor-ops.dataset_version"] == "2"

    current = champion(settings, name)
    assert current is not None and current.version == "2" and current.aliases == ["champion"]
    again = promote(settings, name, "2", reason="again", by="person:bob")
    assert not again.changed and again.promoted_by == "person:alice"
    assert mlflow.get_model_version(name, "2").tags["arkor-ops.promotion_reason"] == (
        "hotfix for ticket 42"
    )


def test_promoting_what_does_not_exist_says_which(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1")])
    settings = RegistrySettings()
    with pytest.raises(ModelNotFoundError, match=f"model '{name}' has no version '7'"):
        promote(settings, name, "7", reason="r", by="gate")
    with pytest.raises(ModelNotFoundError, match="no registered model 'nope-"):
        promote(settings, f"nope-{uuid.uuid4().hex[:6]}", "1", reason="r", by="gate")
    with pytest.raises(ValueError, match="'gate' or 'person:<user>'"):
        promote(settings, name, "1", reason="r", by="alice")
    assert client().get_registered_model(name).aliases == {}


def test_evaluations_are_runs_nested_under_the_training_run_one_per_set(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, got = versions(s3_prefix, [("s3://d/a", "1")])
    settings = RegistrySettings()
    metrics = {"loss": 1.2, "json_valid": 0.9, "field_match:priority": 0.7}
    recorded = record_evaluation(settings, name, "1", metrics, "s3://evals/set.jsonl#etag-a")

    mlflow = client()
    run = mlflow.get_run(recorded.run_id)
    assert run.data.metrics == metrics
    assert run.data.tags["mlflow.parentRunId"] == got[0].run_id
    assert run.data.tags["arkor-ops.eval_dataset_id"] == "s3://evals/set.jsonl#etag-a"
    assert run.info.experiment_id == got[0].experiment_id and run.info.status == "FINISHED"
    version_tags = mlflow.get_model_version(name, "1").tags
    assert version_tags["arkor-ops.eval_dataset_id"] == "s3://evals/set.jsonl#etag-a"
    assert version_tags["arkor-ops.eval_run_id"] == recorded.run_id

    found = evaluation_of(settings, name, "1", "s3://evals/set.jsonl#etag-a")
    assert found is not None and found.metrics == metrics
    # another evaluation set: never scored on it, so the champion must be scored again
    assert evaluation_of(settings, name, "1", "s3://evals/set.jsonl#etag-b") is None

    rescored = record_evaluation(settings, name, "1", {"loss": 1.1}, "s3://evals/set.jsonl#etag-a")
    found = evaluation_of(settings, name, "1", "s3://evals/set.jsonl#etag-a")
    assert found is not None and found.metrics == {"loss": 1.1} and found.run_id == rescored.run_id
    live = mlflow.search_runs(
        [got[0].experiment_id], filter_string="tags.`arkor-ops.evaluated_model` = '" + name + "'"
    )
    assert [r.info.run_id for r in live] == [rescored.run_id]


def test_describe_and_list_show_versions_aliases_metrics_and_lineage(
    mlflow_env: dict[str, str], s3_prefix: str
) -> None:
    name, got = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2")])
    settings = RegistrySettings()
    promote(settings, name, "1", reason="first", by="gate")
    model = describe_model(settings, name)
    assert model.champion == "1" and model.aliases == {"champion": "1"}
    assert [v.version for v in model.versions] == ["2", "1"]
    v1 = model.versions[1]
    assert v1.aliases == ["champion"] and v1.run_id == got[0].run_id
    assert v1.metrics["train_loss"] == 1.45  # the run's last value
    assert v1.lineage["dataset_uri"] == "s3://d/a" and v1.lineage["promoted_by"] == "gate"
    assert model.to_dict()["versions"][0]["lineage"]["dataset_version"] == "2"

    (summary,) = [m for m in list_models(settings) if m.name == name]
    assert (summary.versions, summary.latest_version, summary.champion) == (2, "2", "1")
    with pytest.raises(ModelNotFoundError):
        describe_model(settings, f"nope-{uuid.uuid4().hex[:6]}")


def test_without_a_tracking_uri_every_query_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RegistryError, match="MLFLOW_TRACKING_URI is not set"):
        find_trained(RegistrySettings(), "m", "s3://d/a", "1")
