"""`arkor-ops models list | show | promote` against the real tracking server; what a promotion
by hand leaves is read back with MLflow's own client."""

from __future__ import annotations

import json
import uuid

import pytest

from arkor_ops.cli import main
from tests.registry.test_models import versions
from tests.registry.test_register_run import client

pytestmark = [pytest.mark.mlflow, pytest.mark.s3]


def test_list_and_show_print_versions_champion_and_lineage(
    mlflow_env: dict[str, str],
    s3_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "220")  # rich's width off a terminal: no folded cells
    name, _ = versions(
        s3_prefix, [("s3://d/rows.jsonl", "etag-1"), ("s3://d/rows.jsonl", "etag-2")]
    )
    assert main(["models", "promote", name, "1", "--reason", "baseline"]) == 0
    capsys.readouterr()

    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[name]["versions"] == 2 and rows[name]["latest_version"] == "2"
    assert rows[name]["champion"] == "1"

    assert main(["models", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if name in ln)
    assert line.split()[:4] == [name, "2", "2", "1"]

    assert main(["models", "show", name, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["champion"] == "1"
    by_version = {v["version"]: v for v in shown["versions"]}
    assert by_version["1"]["aliases"] == ["champion"]
    assert by_version["2"]["lineage"]["dataset_version"] == "etag-2"
    assert by_version["2"]["metrics"]["train_loss"] == 1.45

    assert main(["models", "show", name]) == 0
    text = capsys.readouterr().out
    assert f"{name}  champion: v1" in text and "etag-2" in text and "s3://d/rows.jsonl" in text


def test_promote_by_hand_is_recorded_as_a_person(
    mlflow_env: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1"), ("s3://d/a", "2")])
    assert main(["models", "promote", name, "1"]) == 0
    capsys.readouterr()
    code = main(
        [
            "models",
            "promote",
            name,
            "2",
            "--reason",
            "the gate's eval set is stale",
            "--by",
            "alice",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"{name} v2 is the champion (was v1), promoted by person:alice"
    )
    mlflow = client()
    assert mlflow.get_model_version_by_alias(name, "champion").version == "2"
    tags = mlflow.get_model_version(name, "2").tags
    assert tags["arkor-ops.promoted_by"] == "person:alice"
    assert tags["arkor-ops.promotion_reason"] == "the gate's eval set is stale"
    assert tags["arkor-ops.previous_champion"] == "1"
    assert mlflow.get_model_version(name, "1").tags["arkor-ops.promoted_by"].startswith("person:")

    assert main(["models", "promote", name, "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


def test_a_missing_model_or_version_is_exit_1_with_its_name(
    mlflow_env: dict[str, str], s3_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = versions(s3_prefix, [("s3://d/a", "1")])
    assert main(["models", "promote", name, "9"]) == 1
    assert f"model '{name}' has no version '9'" in capsys.readouterr().err
    nobody = f"nobody-{uuid.uuid4().hex[:6]}"
    assert main(["models", "show", nobody]) == 1
    assert f"no registered model '{nobody}'" in capsys.readouterr().err
    assert client().get_registered_model(name).aliases == {}


def test_without_a_tracking_uri_it_says_which_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for argv in (["models", "list"], ["models", "show", "m"], ["models", "promote", "m", "1"]):
        assert main(argv) == 2
        assert "MLFLOW_TRACKING_URI is not set" in capsys.readouterr().err
