"""The evaluation stage in a flow run, and the loop it closes after training.

``evaluate_adapter`` runs one evaluation job (:mod:`arkor_ops.evaluator`: a Job on the training
image, or local processes) to its end and returns its metrics and per-sample answers; a failed
evaluation (a bad scorer, a missing adapter) raises with the job's error, so the flow run fails
and nothing is promoted. While the job waits (queued, unschedulable, pulling the image, …) each
``job.phase`` update is a line of the flow run's log, ``Job <id>: unschedulable · …``, as for
training. A cancel request for the flow run stops the evaluation job, as ``wait_for_training``
does for training.

``evaluate_and_gate`` is the retrain flows' last stage: score the new version (the run's final
adapter), score the champion on the same evaluation set unless MLflow already holds its scores
on exactly that set, record both, and let the gate (:mod:`.promotion`) decide. The set is
identified by what was scored, not by its name: a digest of the prompts and reference answers
of the challenger's samples plus the metric names, so a changed file behind the same URI is a
new set and the champion is scored again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from prefect import runtime, task
from prefect.logging import get_run_logger

from arkor_ops.backends import resolve_backend
from arkor_ops.config import AdapterRef, TrainerConfig
from arkor_ops.evaluation import EvaluationConfig, EvaluationSpec
from arkor_ops.flows.promotion import (
    champion_scores,
    promotion_gate,
    record_scores,
    serve_champion,
)
from arkor_ops.flows.reporting import phase_line
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.flows.training import _follow_unless_cancelled
from arkor_ops.promotion import PromotionSettings, Scores
from arkor_ops.results import PhaseContext

logger = logging.getLogger(__name__)


class EvaluationJobError(RuntimeError):
    """The evaluation job ended failed or cancelled (the message is its error)."""


class EvaluationCancelledError(EvaluationJobError):
    """The flow run was cancelled while the evaluation job ran, and the job was stopped."""


def evaluation_config(
    config: TrainerConfig, spec: EvaluationSpec, adapter: AdapterRef, label: str
) -> EvaluationConfig:
    """The evaluation of ``adapter`` (trained on ``config``'s base model) on ``spec``."""
    return EvaluationConfig(
        name=f"{config.name}-{label}"[:200],
        model=config.model,
        revision=config.revision,
        adapter=adapter,
        evaluation=spec,
    )


def eval_set_id(spec: EvaluationSpec, samples: Sequence[dict[str, Any]]) -> str:
    """The evaluation set as scored: its prompts and references, and the metric names."""
    digest = hashlib.sha256()
    digest.update(json.dumps(sorted(spec.metrics)).encode())
    for sample in samples:
        pair = [sample.get("prompt"), sample.get("reference")]
        digest.update(json.dumps(pair, sort_keys=True, default=str).encode() + b"\n")
    return f"sha256:{digest.hexdigest()[:32]}"


def gate_rule(spec: EvaluationSpec, promotion: PromotionSettings | None) -> PromotionSettings:
    """The gate's rule: ``promotion``, else the first metric of ``spec`` with any improvement.

    Raises:
        ValueError: ``promotion.metric`` is not one of the metrics the evaluation scores.
    """
    rule = promotion or PromotionSettings(metric=spec.metrics[0])
    if rule.metric not in spec.metrics:
        raise ValueError(
            f"promotion.metric {rule.metric!r} is not one of evaluation.metrics "
            f"{list(spec.metrics)}: add it there or pick one of them"
        )
    return rule


async def evaluate_only(
    config: TrainerConfig, backend: BackendSettings, key: str, spec: EvaluationSpec, job_id: str
) -> dict[str, Any]:
    """Without a registry: score the run's final adapter, nothing to promote."""
    ref = AdapterRef(kind="final", job_id=job_id)
    scored = await evaluate_adapter(
        evaluation_config(config, spec, ref, "final"), backend, f"{key}/evaluate-final", "final"
    )
    get_run_logger().info("No registry (MLFLOW_TRACKING_URI unset): evaluated, nothing promoted")
    return {"metrics": scored["metrics"], "job_id": scored["job_id"], "uri": scored["uri"]}


def _champion_ref(held: dict[str, Any]) -> AdapterRef:
    """The champion's adapter: its run's final adapter, by job id, else by its storage prefix."""
    if held.get("job_id"):
        return AdapterRef(kind="final", job_id=held["job_id"])
    if held.get("final_adapter"):
        return AdapterRef(uri=held["final_adapter"])
    raise ValueError(
        f"champion v{held['version']} has no arkor-ops.job_id or arkor-ops.final_adapter tag: "
        "it cannot be evaluated again (promote a version this project registered)"
    )


@task(task_run_name="evaluate-{label}")
async def evaluate_adapter(
    config: EvaluationConfig, settings: BackendSettings, idempotency_key: str, label: str
) -> dict[str, Any]:
    """Run the evaluation job to its end (adopting the one this key made before).

    Returns:
        ``job_id``, ``metrics``, ``samples`` (the per-sample answers) and ``uri``.

    Raises:
        EvaluationCancelledError: the flow run was cancelled meanwhile (the job was stopped).
        EvaluationJobError: the job failed or was cancelled; the message is its error.
    """
    from arkor_ops.evaluator import AsyncEvaluator

    log = get_run_logger()
    flow_run_id = runtime.flow_run.id
    overrides = settings.overrides(str(flow_run_id) if flow_run_id else None)

    def on_phase(ctx: PhaseContext) -> None:  # a pending evaluation is never silent
        log.info("Job %s: %s", ctx.job.id, phase_line(ctx))

    async with resolve_backend(settings.backend, **overrides) as backend:
        evaluator = AsyncEvaluator(
            config,
            backend=backend,
            callbacks={"on_phase": on_phase},
            idempotency_key=idempotency_key,
        )
        eval_job = await evaluator.start()
        log.info("Evaluation %s: job %s", label, eval_job)
        result = await _follow_unless_cancelled(evaluator)
        if result is None:
            await evaluator.cancel()
            raise EvaluationCancelledError(f"Flow run cancelled: evaluation job {eval_job} stopped")
        if result.status != "completed":
            raise EvaluationJobError(
                f"evaluation {label} ({result.job.id}) {result.status}: "
                f"{result.error or result.job.error or 'no error reported'}"
            )
        samples = await evaluator.samples()
    metrics = {k: v for k, v in result.metrics.items() if v is not None}
    log.info("Evaluation %s: %s", label, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return {"job_id": result.job.id, "metrics": metrics, "samples": samples, "uri": result.uri}


async def evaluate_and_gate(  # noqa: PLR0917 - one stage, named inputs
    config: TrainerConfig,
    backend: BackendSettings,
    key: str,
    spec: EvaluationSpec,
    promotion: PromotionSettings | None,
    registered: dict[str, Any],
    job_id: str,
) -> dict[str, Any]:
    """Score the new version and the champion on ``spec``, then promote or keep the champion.

    Args:
        config: the training run's config (its base model).
        backend: where the evaluation jobs run.
        key: the flow run's idempotency key (each evaluation job's key derives from it).
        spec: the evaluation set and metrics.
        promotion: the gate's rule; default: the first metric of ``spec``, any improvement.
        registered: what ``register_adapter`` returned (model name and version).
        job_id: the training run whose final adapter is the new version.

    Returns:
        What ``promotion_gate`` returned, plus ``evaluations`` (metrics per version).
    """
    name, version = registered["model_name"], str(registered["version"])
    rule = gate_rule(spec, promotion)
    challenger_ref = AdapterRef(kind="final", job_id=job_id)
    challenger = await evaluate_adapter(
        evaluation_config(config, spec, challenger_ref, f"v{version}"),
        backend,
        f"{key}/evaluate-v{version}",
        f"v{version}",
    )
    set_id = eval_set_id(spec, challenger["samples"])
    await record_scores(name, version, challenger["metrics"], set_id)
    held = await champion_scores(name, set_id)
    champion: Scores | None = None
    champion_samples: list[dict[str, Any]] = []
    if held is not None and str(held["version"]) != version:
        metrics = held["metrics"]
        if metrics is None:  # never scored on this set: score it now, on the same rows
            ref = _champion_ref(held)
            label = f"champion-v{held['version']}"
            scored = await evaluate_adapter(
                evaluation_config(config, spec, ref, label), backend, f"{key}/{label}", label
            )
            metrics = scored["metrics"]
            champion_samples = scored["samples"]
            await record_scores(name, str(held["version"]), metrics, set_id)
        champion = Scores(version=str(held["version"]), metrics=metrics)
    outcome = await promotion_gate(
        name,
        rule,
        Scores(version=version, metrics=challenger["metrics"]),
        champion,
        challenger["samples"],
        champion_samples,
    )
    evaluations = {version: challenger["metrics"]}
    if champion is not None:
        evaluations[champion.version] = dict(champion.metrics)
    served = await serve_champion(name, version, backend) if outcome["promoted"] else {}
    return {**outcome, "eval_set": set_id, "evaluations": evaluations, "endpoints": served}
