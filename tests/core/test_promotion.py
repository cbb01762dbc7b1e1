"""The promotion gate as a pure function: first run, the threshold, which way a metric improves,
and settings that name the bad field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arkor_ops.promotion import PromotionSettings, Scores, decide, decide_with, higher_is_better


def test_the_first_version_of_a_model_promotes_itself() -> None:
    got = decide("loss", False, 0.5, Scores("1", {"loss": 9.0}), None)
    assert got.promote and got.champion is None and got.delta is None
    assert got.reason == "promoted v1: first version (loss 9)"


def test_a_lower_loss_by_at_least_min_improvement_is_promoted() -> None:
    got = decide("loss", False, 0.05, Scores("3", {"loss": 1.2}), Scores("2", {"loss": 1.3}))
    assert got.promote
    assert got.delta == pytest.approx(-0.1)
    assert got.reason == "promoted v3 over v2: loss 1.2 vs 1.3"


def test_a_smaller_improvement_keeps_the_champion_and_says_so() -> None:
    got = decide("loss", False, 0.2, Scores("3", {"loss": 1.2}), Scores("2", {"loss": 1.3}))
    assert not got.promote
    assert got.reason.startswith("kept champion v2: loss 1.2 vs 1.3 ")
    assert "at least 0.2" in got.reason


def test_an_improvement_equal_to_the_threshold_counts_despite_float_noise() -> None:
    # 0.9 - 0.8 is 0.09999999999999998 in floating point
    got = decide(
        "json_valid", True, 0.1, Scores("2", {"json_valid": 0.9}), Scores("1", {"json_valid": 0.8})
    )
    assert got.promote


def test_a_tie_or_a_regression_never_promotes_even_with_no_threshold() -> None:
    tie = decide(
        "json_valid", True, 0.0, Scores("2", {"json_valid": 0.8}), Scores("1", {"json_valid": 0.8})
    )
    assert not tie.promote and "a strict improvement" in tie.reason
    worse = decide("loss", False, 0.0, Scores("2", {"loss": 1.4}), Scores("1", {"loss": 1.3}))
    assert not worse.promote and worse.delta == pytest.approx(0.1)


def test_higher_is_better_for_the_answer_checks_lower_for_losses() -> None:
    assert higher_is_better("loss") is False
    assert higher_is_better("eval_loss") is False
    assert higher_is_better("perplexity") is False
    for metric in ("json_valid", "json_schema", "exact_match", "field_match:priority"):
        assert higher_is_better(metric) is True
    assert higher_is_better("bleu") is None


def test_a_missing_metric_is_an_error_naming_what_there_is() -> None:
    with pytest.raises(
        ValueError, match=r"challenger v2 has no 'json_valid' metric \(it has: loss\)"
    ):
        decide("json_valid", True, 0.0, Scores("2", {"loss": 1.0}), Scores("1", {"json_valid": 1}))
    with pytest.raises(ValueError, match="champion v1 has no 'loss'"):
        decide("loss", False, 0.0, Scores("2", {"loss": 1.0}), Scores("1", {}))


def test_settings_infer_the_direction_and_accept_camel_case() -> None:
    settings = PromotionSettings.model_validate(
        {"metric": "field_match:priority", "minImprovement": 0.02}
    )
    assert settings.higher_is_better is True and settings.min_improvement == 0.02
    got = decide_with(
        settings,
        Scores("4", {"field_match:priority": 0.71}),
        Scores("3", {"field_match:priority": 0.7}),
    )
    assert not got.promote
    assert PromotionSettings().metric == "loss" and PromotionSettings().higher_is_better is False


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as negative:
        PromotionSettings(metric="loss", min_improvement=-0.1)
    assert [e["loc"] for e in negative.value.errors()] == [("min_improvement",)]
    with pytest.raises(ValidationError) as unknown:
        PromotionSettings(metric="bleu")
    (error,) = unknown.value.errors()
    assert (
        error["loc"] == ("higher_is_better",) and "'bleu' is not a built-in metric" in error["msg"]
    )
    assert PromotionSettings(metric="bleu", higher_is_better=True).higher_is_better is True
    with pytest.raises(ValidationError) as extra:
        PromotionSettings.model_validate({"metric": "loss", "threshold": 1})
    assert [e["loc"] for e in extra.value.errors()] == [("threshold",)]
