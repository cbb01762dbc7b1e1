"""The promotion gate in a flow run: decide, promote (or keep the champion), show why.

The rule is :func:`arkor_ops.promotion.decide`; the MLflow side is :mod:`arkor_ops.models`.
This module only wires them into Prefect:

* ``champion_scores``: the champion and its metrics on the evaluation set, or None where it was
  never scored on that set (the flow scores it again first);
* ``record_scores``: a version's metrics on the evaluation set, logged to MLflow;
* ``promotion_gate``: decides, then either promotes the challenger (the ``champion`` alias,
  tagged ``promoted_by=gate``) and emits ``arkor-ops.model.promoted`` (resource
  ``arkor-ops.model.<name>``, labels naming the model and the version), or keeps the
  champion; in both cases it leaves a markdown artifact with the metrics side by side, the
  delta, the decision and a few answers from both. The challenger stays registered either way.

A flow ends with :func:`gate_state`: ``Completed`` with the decision as its message, e.g.
``kept champion v2: loss 1.31 vs 1.27 …``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import State, task
from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.states import Completed

from arkor_ops.errors import ArkorOpsError
from arkor_ops.flows.reporting import artifact_key
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.models import champion, evaluation_of, promote, record_evaluation
from arkor_ops.promotion import Decision, PromotionSettings, Scores, decide_with
from arkor_ops.registry import RegistrySettings

EVENT = "arkor-ops.model.promoted"
RESOURCE_PREFIX = "arkor-ops.model."
NAME_LABEL = "arkor-ops.model.name"
VERSION_LABEL = "arkor-ops.model.version"
#: How many answers of each model the artifact shows.
SAMPLE_COUNT = 3
_CELL_CHARS = 160


def promoted_event_id(name: str, version: str, previous: str | None) -> uuid.UUID:
    """A stable id for one promotion, so a retried task re-sends the same event."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"arkor-ops-model:{name}#{version}<-{previous or ''}")


def announce_promotion(name: str, version: str, previous: str | None, decision: Decision) -> None:
    """Emit ``arkor-ops.model.promoted`` for ``name`` version ``version``."""
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": RESOURCE_PREFIX + name,
            "prefect.resource.name": name,
            NAME_LABEL: name,
            VERSION_LABEL: version,
        },
        payload={
            "name": name,
            "version": version,
            "previous_champion": previous,
            "metric": decision.metric,
            "challenger": decision.challenger,
            "champion": decision.champion,
            "delta": decision.delta,
            "reason": decision.reason,
        },
        id=promoted_event_id(name, version, previous),
    )


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = " ".join(str(value).split())
    if len(text) > _CELL_CHARS:
        text = text[: _CELL_CHARS - 1] + "…"
    return text.replace("|", "\\|") or "–"


def comparison_markdown(  # noqa: PLR0917 - the two sides of one table
    name: str,
    decision: Decision,
    challenger: Scores,
    champion_: Scores | None,
    challenger_samples: Sequence[Mapping[str, Any]] = (),
    champion_samples: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The artifact: every metric side by side (the compared one first), the delta, the decision,
    and the first answers of the challenger next to the champion's for the same prompt."""
    verdict = "promoted" if decision.promote else "kept the champion"
    lines = [f"## {name}: {verdict}", "", f"**Decision:** {decision.reason}", ""]
    right = f"champion v{champion_.version}" if champion_ else "champion"
    lines += [
        f"| metric | challenger v{challenger.version} | {right} | delta |",
        "|---|---|---|---|",
    ]
    keys = sorted({*challenger.metrics, *(champion_.metrics if champion_ else {})})
    keys.sort(key=lambda k: k != decision.metric)
    for key in keys:
        new = challenger.metrics.get(key)
        old = champion_.metrics.get(key) if champion_ else None
        delta = new - old if new is not None and old is not None else None
        label = f"**{key}** (gate)" if key == decision.metric else key
        lines.append(
            f"| {label} | {_cell(new)} | {_cell(old)} | "
            f"{'–' if delta is None else f'{delta:+.4g}'} |"
        )
    if challenger_samples:
        by_prompt = {str(s.get("prompt")): s for s in champion_samples}
        lines += [
            "",
            "### Sample answers",
            "",
            f"| prompt | reference | challenger v{challenger.version} | {right} |",
            "|---|---|---|---|",
        ]
        for sample in list(challenger_samples)[:SAMPLE_COUNT]:
            other = by_prompt.get(str(sample.get("prompt")), {})
            lines.append(
                f"| {_cell(sample.get('prompt'))} | {_cell(sample.get('reference'))} | "
                f"{_cell(sample.get('answer'))} | {_cell(other.get('answer'))} |"
            )
    return "\n".join(lines) + "\n"


@task(task_run_name="champion-scores")
async def champion_scores(name: str, eval_dataset_id: str) -> dict[str, Any] | None:
    """The champion's version and its metrics on ``eval_dataset_id``.

    Returns:
        None when the model has no champion; else ``{"version", "metrics", "job_id",
        "final_adapter"}`` (the last two from its lineage tags, to evaluate it again) where
        ``metrics`` is None when the champion was never scored on this set (score it again).
    """
    registry = RegistrySettings()
    current = await asyncio.to_thread(champion, registry, name)
    if current is None:
        return None
    found = await asyncio.to_thread(evaluation_of, registry, name, current.version, eval_dataset_id)
    lineage = current.lineage
    return {
        "version": current.version,
        "metrics": found.metrics if found else None,
        "job_id": lineage.get("job_id"),
        "final_adapter": lineage.get("final_adapter"),
    }


@task(task_run_name="record-scores-v{version}")
async def record_scores(
    name: str, version: str, metrics: dict[str, float], eval_dataset_id: str
) -> str:
    """Log ``version``'s metrics on ``eval_dataset_id`` to MLflow; returns the evaluation run id."""
    recorded = await asyncio.to_thread(
        record_evaluation, RegistrySettings(), name, version, metrics, eval_dataset_id
    )
    return recorded.run_id


@task(task_run_name="promotion-gate-v{challenger.version}")
async def promotion_gate(  # noqa: PLR0917 - the two sides of one comparison
    name: str,
    settings: PromotionSettings,
    challenger: Scores,
    champion_: Scores | None,
    challenger_samples: list[dict[str, Any]] | None = None,
    champion_samples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Promote ``challenger`` if it beats ``champion_`` by the settings' rule; show why.

    Args:
        name: the registered model.
        settings: the metric, its direction and ``min_improvement``.
        challenger: the new version and its metrics on the evaluation set.
        champion_: the champion and its metrics on the same set; None only when the model
            has no champion yet (the first version promotes itself).
        challenger_samples: the challenger's answers (``prompt``, ``reference``, ``answer``).
        champion_samples: the champion's answers to the same prompts.

    Returns:
        ``promoted``, ``model``, ``version`` (the challenger), ``champion`` (the version
        holding the alias afterwards), ``reason``, ``metric``, the two values and ``delta``.

    Raises:
        ValueError: the registry's champion is not the one scored (promoted meanwhile, or
            not scored at all), or a metric is missing.
    """
    log = get_run_logger()
    registry = RegistrySettings()
    current = await asyncio.to_thread(champion, registry, name)
    held = current.version if current else None
    scored = champion_.version if champion_ else None
    if held not in (scored, challenger.version):  # the challenger itself: a retried task
        raise ValueError(
            f"{name}: the champion is {f'v{held}' if held else 'no version'} but "
            f"{f'v{scored}' if scored else 'none'} was scored: score the current champion "
            "on the same evaluation set"
        )
    decision = decide_with(settings, challenger, champion_)
    previous = scored
    holder = held
    if decision.promote:
        done = await asyncio.to_thread(
            promote, registry, name, challenger.version, reason=decision.reason, by="gate"
        )
        previous = done.previous
        announce_promotion(name, challenger.version, previous, decision)
        holder = challenger.version
    log.info("%s: %s", name, decision.reason)
    await acreate_markdown_artifact(
        markdown=comparison_markdown(
            name, decision, challenger, champion_, challenger_samples or [], champion_samples or []
        ),
        key=artifact_key(f"{name}-v{challenger.version}", "promotion"),
        description=decision.reason,
    )
    return {
        "promoted": decision.promote,
        "model": name,
        "version": challenger.version,
        "champion": holder,
        "previous_champion": previous,
        "reason": decision.reason,
        "metric": decision.metric,
        "challenger_value": decision.challenger,
        "champion_value": decision.champion,
        "delta": decision.delta,
    }


@task(task_run_name="serve-champion-v{version}")
async def serve_champion(name: str, version: str, backend: BackendSettings) -> dict[str, str]:
    """Move the endpoints that follow ``name``'s champion to ``version``; wait until each serves.

    On Kubernetes only (a local backend has no endpoints): every endpoint labelled as following
    ``name`` (:mod:`arkor_ops.serving.cluster`) gets the version's final adapter as its target,
    and its pod hot-swaps to it. An endpoint that refuses it keeps serving the old version; that
    is logged as a warning and reported, and does not undo the promotion; so is an account that
    may not look for endpoints (k8s/serving/role.yaml is the Role that may).

    Returns:
        Each endpoint's outcome by name: ``serving`` or why not.
    """
    if backend.resolved_name() != "kubernetes":
        return {}
    from arkor_ops.serving.cluster import move_followers
    from arkor_ops.settings import KubernetesSettings, read

    log = get_run_logger()
    settings = read(KubernetesSettings)
    if backend.namespace:
        settings = settings.model_copy(update={"namespace": backend.namespace})
    try:
        outcomes = await asyncio.to_thread(
            move_followers, settings, RegistrySettings(), name, version
        )
    except ArkorOpsError as exc:  # no access to the cluster, or not to endpoints (their Role)
        log.warning("no endpoint moved to %s v%s: %s", name, version, exc)
        return {}
    for endpoint, outcome in outcomes.items():
        if outcome == "serving":
            log.info("endpoint %s serves %s v%s", endpoint, name, version)
        else:
            log.warning("endpoint %s: %s", endpoint, outcome)
    return outcomes


def gate_state(outcome: Mapping[str, Any]) -> State:
    """The flow run's final state after the gate: ``Completed`` with the decision as message."""
    return Completed(message=str(outcome["reason"]), data=dict(outcome))
