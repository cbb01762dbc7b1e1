"""The scorers: what each metric counts as right, and how a bad user scorer fails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from arkor_ops.evaluation import validate_evaluation_config
from arkor_ops.scoring import (
    ScorerError,
    build_scorers,
    exact_match,
    field_match,
    json_schema,
    json_valid,
    mean,
)

REF = '{"category": "billing", "meta": {"urgency": "high"}}'


def test_json_valid_reads_fenced_answers() -> None:
    assert json_valid('{"a": 1}') == 1.0
    assert json_valid('```json\n{"a": 1}\n```') == 1.0
    assert json_valid("category: billing") == 0.0


def test_json_schema_counts_only_answers_that_validate() -> None:
    schema = {"type": "object", "required": ["category"]}
    assert json_schema('{"category": "bug"}', schema) == 1.0
    assert json_schema('{"other": 1}', schema) == 0.0
    assert json_schema("nope", schema) == 0.0


def test_field_match_compares_one_field() -> None:
    assert field_match('{"category": "billing", "x": 2}', REF, "category") == 1.0
    assert field_match('{"category": "bug"}', REF, "category") == 0.0
    assert field_match('{"meta": {"urgency": "high"}}', REF, "meta.urgency") == 1.0
    assert field_match("not json", REF, "category") == 0.0
    # a reference without the field is not scored: it is no miss either
    assert field_match('{"category": "billing"}', REF, "summary") is None
    assert mean([1.0, None, 0.0]) == 0.5
    assert mean([None]) is None


def test_exact_match_ignores_surrounding_whitespace() -> None:
    assert exact_match("  category: bug\n", "category: bug") == 1.0
    assert exact_match("category: Bug", "category: bug") == 0.0


def _spec(metrics: list[str]):  # type: ignore[no-untyped-def]
    data = {
        "name": "e",
        "model": "/m",
        "evaluation": {"dataset": {"type": "file", "path": "/e.jsonl"}, "metrics": metrics},
    }
    return validate_evaluation_config(data).evaluation


def test_a_user_scorer_is_imported_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_scorers.py").write_text(
        "def length(prompt, answer, reference):\n    return min(len(answer) / 10, 1.0)\n"
        "def broken(prompt, answer, reference):\n    raise KeyError('label')\n"
        "def text(prompt, answer, reference):\n    return 'good'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_scorers", raising=False)
    scorers = build_scorers(_spec(["loss", "json_valid", "my_scorers:length"]))
    assert [s.name for s in scorers] == ["json_valid", "my_scorers:length"]
    assert scorers[1].score("p", "12345", "r") == 0.5

    broken = build_scorers(_spec(["my_scorers:broken"]))[0]
    with pytest.raises(ScorerError, match=r"scorer my_scorers:broken failed: KeyError: 'label'"):
        broken.score("p", "a", "r")
    text = build_scorers(_spec(["my_scorers:text"]))[0]
    with pytest.raises(ScorerError, match="must return a finite number"):
        text.score("p", "a", "r")
    with pytest.raises(ScorerError, match="has no function missing"):
        build_scorers(_spec(["my_scorers:missing"]))
    with pytest.raises(ScorerError, match="cannot import no_such_module_x"):
        build_scorers(_spec(["no_such_module_x:f"]))
