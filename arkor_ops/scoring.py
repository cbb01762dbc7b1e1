"""Scorers: pure functions from one generated answer (and its reference) to a score.

Every scorer returns a float in [0, 1] for a scored sample, or None when the sample cannot be
scored by it (``field_match`` on a reference without that field): a metric is the mean over the
samples it scored, so a reference that lacks a field never counts as a miss.

Answers are models' text: a JSON answer wrapped in a Markdown code fence (```json … ```), as
chat models often write it, is read as the JSON inside the fence.

User scorers are ``package.module:function`` taking ``(prompt, answer, reference)`` and
returning a number. They are imported by the worker, where the user's code is installed; a
scorer that cannot be imported, raises, or returns something other than a finite number raises
:class:`ScorerError` naming it, which fails the evaluation with that message.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arkor_ops.errors import ArkorOpsError
from arkor_ops.evaluation import FIELD_MATCH, EvaluationSpec, metric_kind

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)
_MISSING = object()

#: (prompt, answer, reference) -> score, or None when the sample is not scored.
Score = Callable[[str, str, str], float | None]


class ScorerError(ArkorOpsError):
    """A user scorer cannot be imported, raised, or returned something that is not a score."""


def parse_json(answer: str) -> Any:
    """The JSON value of ``answer`` (inside a code fence if it is fenced).

    Raises:
        ValueError: it is not JSON.
    """
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    return json.loads(text)


def json_valid(answer: str) -> float:
    """1.0 when the answer is JSON, else 0.0."""
    try:
        parse_json(answer)
    except ValueError:
        return 0.0
    return 1.0


def json_schema(answer: str, schema: dict[str, Any]) -> float:
    """1.0 when the answer is JSON that validates against ``schema``, else 0.0."""
    from jsonschema.validators import validator_for

    try:
        value = parse_json(answer)
    except ValueError:
        return 0.0
    validator = validator_for(schema)(schema)
    return 1.0 if validator.is_valid(value) else 0.0


def _field(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def field_match(answer: str, reference: str, field: str) -> float | None:
    """1.0 when the answer's JSON ``field`` (``a.b``: nested) equals the reference's.

    None when the reference is not JSON or has no such field (nothing to compare with); 0.0
    when the answer is not JSON, lacks the field, or holds another value.
    """
    try:
        expected = _field(parse_json(reference), field)
    except ValueError:
        return None
    if expected is _MISSING:
        return None
    try:
        got = _field(parse_json(answer), field)
    except ValueError:
        return 0.0
    return 1.0 if got is not _MISSING and got == expected else 0.0


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the answer equals the reference, surrounding whitespace ignored."""
    return 1.0 if answer.strip() == reference.strip() else 0.0


def load_scorer(name: str) -> Callable[..., Any]:
    """Import the user scorer ``package.module:function``.

    Raises:
        ScorerError: the module cannot be imported or has no such callable.
    """
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ScorerError(
            f"scorer {name}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise ScorerError(f"scorer {name}: {module_name} has no function {attr}")
    return func  # type: ignore[no-any-return]


def _checked(name: str, func: Callable[..., Any]) -> Score:
    def score(prompt: str, answer: str, reference: str) -> float | None:
        try:
            value = func(prompt, answer, reference)
        except Exception as exc:
            raise ScorerError(f"scorer {name} failed: {type(exc).__name__}: {exc}") from exc
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ScorerError(
                f"scorer {name} returned {str(value)[:80]!r}: it must return a finite number"
            )
        return float(value)

    return score


@dataclass(frozen=True)
class Scorer:
    """One metric that scores answers (every metric but ``loss``)."""

    name: str
    score: Score


def _builtin(name: str, spec: EvaluationSpec) -> Score:
    schema = spec.json_schema or {}
    field = name[len(FIELD_MATCH) :]

    def score(prompt: str, answer: str, reference: str) -> float | None:
        if name == "json_valid":
            return json_valid(answer)
        if name == "json_schema":
            return json_schema(answer, schema)
        if name == "exact_match":
            return exact_match(answer, reference)
        return field_match(answer, reference, field)

    return score


def build_scorers(spec: EvaluationSpec) -> list[Scorer]:
    """The answer scorers of ``spec``'s metrics, in their order (user scorers imported now).

    Raises:
        ScorerError: a user scorer cannot be imported.
    """
    out: list[Scorer] = []
    for name in spec.metrics:
        if name == "loss":
            continue  # scored by the model itself (the worker), not from the answer
        if metric_kind(name) == "user":
            out.append(Scorer(name, _checked(name, load_scorer(name))))
        else:
            out.append(Scorer(name, _builtin(name, spec)))
    return out


def mean(scores: Sequence[float | None]) -> float | None:
    """The mean of the scored samples (None: none was scored)."""
    scored = [s for s in scores if s is not None]
    return sum(scored) / len(scored) if scored else None
