"""The promotion gate: does a freshly trained challenger replace the champion?

A pure function of two sets of evaluation metrics, so the rule is tested with plain dicts and
the flows only apply its answer (:mod:`arkor_ops.flows.promotion`):

* no champion yet: the first version of a model promotes itself;
* otherwise the challenger is promoted only when the configured metric improves on the
  champion's, scored on the same evaluation set, strictly and by at least ``min_improvement``
  (for ``loss`` lower is better, for the answer checks higher is better);
* else the champion is kept and the challenger stays registered as a candidate.

Which way a metric improves is known for the built-in metrics (:func:`higher_is_better`) and
configurable for any other (``PromotionSettings.higher_is_better``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

#: Built-in metrics where a smaller value is better (also with an ``eval_`` prefix; ``*_loss`` too).
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
#: Built-in metrics where a larger value is better; ``field_match:<field>`` too.
HIGHER_IS_BETTER = frozenset({"json_valid", "json_schema", "exact_match", "accuracy"})
#: Slack for float noise: an improvement this close to ``min_improvement`` counts as reaching it.
_EPSILON = 1e-12


def higher_is_better(metric: str) -> bool | None:
    """Whether a larger value of a built-in metric is better; None for a metric it does not know."""
    name = metric.removeprefix("eval_")
    if name in LOWER_IS_BETTER or name.endswith("_loss"):
        return False
    if name in HIGHER_IS_BETTER or name.startswith("field_match:"):
        return True
    return None


class PromotionSettings(BaseModel):
    """How the retrain flows decide whether a challenger replaces the champion."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    metric: str = Field(
        default="loss",
        min_length=1,
        max_length=250,
        description="Evaluation metric compared between challenger and champion, e.g. `loss`, "
        "`json_valid`, `field_match:priority`.",
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description="How much the metric must improve (in the metric's units) for a "
        "promotion; 0: any strict improvement.",
    )
    higher_is_better: bool | None = Field(
        default=None,
        validate_default=True,
        description="Whether a larger metric value is better; default: known for the built-in "
        "metrics (`loss` lower; `json_valid`, `json_schema`, `exact_match`, `field_match:*` "
        "higher), required for any other.",
    )

    @field_validator("higher_is_better")
    @classmethod
    def _direction_known(cls, value: bool | None, info: ValidationInfo) -> bool:
        if value is not None:
            return value
        metric = info.data.get("metric")
        if metric is None:  # the metric itself was invalid: that error says enough
            return True
        known = higher_is_better(metric)
        if known is None:
            raise ValueError(
                f"metric {metric!r} is not a built-in metric: say whether higher is better "
                "(true/false)"
            )
        return known


@dataclass(frozen=True)
class Scores:
    """One model version's evaluation metrics (on one evaluation set)."""

    version: str
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the gate decided, and why in a sentence a flow run can end with.

    Attributes:
        promote: whether the challenger becomes the champion.
        reason: e.g. ``kept champion v2: loss 1.31 vs 1.27``.
        metric: the compared metric.
        challenger: the challenger's value.
        champion: the champion's value (None on a model's first run).
        delta: challenger minus champion (None on a model's first run).
    """

    promote: bool
    reason: str
    metric: str
    challenger: float
    champion: float | None = None
    delta: float | None = None


def _value(scores: Scores, metric: str, who: str) -> float:
    if metric not in scores.metrics:
        have = ", ".join(sorted(scores.metrics)) or "none"
        raise ValueError(f"the {who} v{scores.version} has no {metric!r} metric (it has: {have})")
    value = float(scores.metrics[metric])
    if math.isnan(value):
        raise ValueError(f"the {who} v{scores.version}'s {metric!r} is NaN")
    return value


def decide(
    metric: str,
    higher_is_better: bool,
    min_improvement: float,
    challenger: Scores,
    champion: Scores | None,
) -> Decision:
    """The gate's answer for ``challenger`` against ``champion`` (None: the model has none yet).

    Args:
        metric: the metric both were scored with.
        higher_is_better: whether a larger value of it is better.
        min_improvement: how much better the challenger must be (>= 0; 0: strictly better).
        challenger: the new version's metrics.
        champion: the champion's metrics on the same evaluation set, or None.

    Returns:
        The decision, with the values and a one-line reason.

    Raises:
        ValueError: a metric is missing or NaN, or ``min_improvement`` is negative.
    """
    if not min_improvement >= 0:
        raise ValueError(f"min_improvement must be >= 0, not {min_improvement}")
    new = _value(challenger, metric, "challenger")
    if champion is None:
        return Decision(
            True, f"promoted v{challenger.version}: first version ({metric} {new:.4g})", metric, new
        )
    old = _value(champion, metric, "champion")
    delta = new - old
    gain = delta if higher_is_better else -delta
    better = gain > 0 and gain >= min_improvement - _EPSILON
    compared = f"{metric} {new:.4g} vs {old:.4g}"
    if better:
        reason = f"promoted v{challenger.version} over v{champion.version}: {compared}"
    else:
        need = (
            f"an improvement of at least {min_improvement:.4g}"
            if min_improvement
            else "a strict improvement"
        )
        reason = (
            f"kept champion v{champion.version}: {compared} "
            f"(challenger v{challenger.version}, delta {delta:+.4g}; a promotion needs {need})"
        )
    return Decision(better, reason, metric, new, old, delta)


def decide_with(
    settings: PromotionSettings, challenger: Scores, champion: Scores | None
) -> Decision:
    """:func:`decide` with the metric, direction and threshold of ``settings``."""
    direction = settings.higher_is_better
    assert direction is not None  # filled in by validation
    return decide(settings.metric, direction, settings.min_improvement, challenger, champion)
