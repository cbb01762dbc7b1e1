"""The ``fine_tune`` flow: one training run, started, followed and cleaned up.

Its parameters are the trainer config (the typed :class:`~arkor_ops.config.TrainerConfig`, so the
Prefect UI renders a form and validates it) and :class:`~.settings.BackendSettings`.
Secrets come by reference only: ``dataset_token_block`` / ``dataset_url_block`` name Prefect
``Secret`` blocks (see :mod:`.secrets`); a token or a credentialed URL given by value is
refused before any job is submitted.

No GPU pod outlives its flow run:

* ``on_cancellation`` / ``on_crashed`` hooks stop the run and any evaluation job still going.
  They run in the runner's process (about 3 s after a cancel request), so they find the run
  from the flow run id, which is the run's idempotency key, and the evaluation jobs from the
  flow run they record (``backend.jobs_by_flow_run()``: the ``arkor-ops.dev/flow-run-id``
  label on Kubernetes);
* ``wait_for_training`` (and the evaluation task) also watch the flow run's state and stop
  their job themselves on a cancel request, for when the runner's SIGTERM is lost or there is
  no runner (see :mod:`.training`); the flow run then ends ``Cancelled``;
* a failure of the flow itself (a timeout, a callback error, losing the stream) cancels the run
  through the ``cancel_training`` task before the flow fails;
* the Job deadline (``BackendSettings.active_deadline_seconds``) and the reaper flow
  (:mod:`.reaper`) are the backstops.

A run started for a dataset version (``dataset_uri`` and ``dataset_version``, as the dataset
trigger sets them) first asks the registry whether a model version was already trained on it
(its lineage tags): if so the flow run completes without starting a job, saying
``dataset <uri> version <v> already trained: <model> v<N>``. The registry remembers this, not
Prefect, so it holds after the Prefect database is reset.

A completed run is then registered in MLflow (``register_adapter``, :mod:`.registry`): its
params, metrics, adapter and a model version with lineage tags; skipped, with a log line, when
``MLFLOW_TRACKING_URI`` is unset. A registration that keeps failing fails the flow run and leaves
the trained adapter where it is.

With ``evaluation``, the loop closes (:mod:`.evaluation`): the new version and the champion
are scored on the same set (the champion only when MLflow holds no scores of it on exactly that
set), and the gate promotes the new version only if ``promotion.metric`` improves by at least
``promotion.min_improvement``; the flow run completes with the decision as its message. An
evaluation that fails fails the flow run and promotes nothing.
"""

from __future__ import annotations

from typing import Any

from prefect import State, flow, runtime
from prefect.client.schemas.objects import FlowRun
from prefect.logging import get_run_logger
from prefect.logging.loggers import flow_run_logger
from prefect.states import Cancelled, Completed

from arkor_ops.config import TrainerConfig
from arkor_ops.evaluation import EvaluationSpec
from arkor_ops.flows.evaluation import (
    EvaluationCancelledError,
    evaluate_and_gate,
    evaluate_only,
    gate_rule,
)
from arkor_ops.flows.promotion import gate_state
from arkor_ops.flows.registry import already_trained_message, dedup_task, registration_task
from arkor_ops.flows.secrets import FlowTrainerConfig, with_secret_refs
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.flows.training import (
    TrainingFailed,
    cancel_check_seconds,
    cancel_training,
    start_training,
    stop_flow_run,
    wait_for_training,
    with_dataset,
)
from arkor_ops.promotion import PromotionSettings

DEFAULT_BACKEND = BackendSettings()


async def stop_training_hook(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Flow hook: stop the training run and the evaluation jobs this flow run started (runs in
    the runner's process)."""
    params = flow_run.parameters
    settings = BackendSettings.model_validate(params.get("backend") or {})
    config = with_dataset(TrainerConfig.model_validate(params["config"]), params.get("dataset_uri"))
    found, others = await stop_flow_run(config, settings, str(flow_run.id))
    # no run context in the runner's process: get_run_logger() would raise
    log = flow_run_logger(flow_run, flow)
    for job_id in others:
        log.info("Flow run %s: job %s stopped", state.name, job_id)
    log.info("Flow run %s: training run %s", state.name, "stopped" if found else "not found")


@flow(
    name="fine-tune",
    on_cancellation=[stop_training_hook],
    on_crashed=[stop_training_hook],
)
async def fine_tune(  # noqa: PLR0917 - flow parameters, named in the UI and the API
    config: FlowTrainerConfig,
    backend: BackendSettings = DEFAULT_BACKEND,
    dataset_uri: str | None = None,
    dataset_version: str | None = None,
    dataset_token_block: str | None = None,
    dataset_url_block: str | None = None,
    evaluation: EvaluationSpec | None = None,
    promotion: PromotionSettings | None = None,
) -> dict[str, Any] | State:
    """Fine-tune a model with LoRA: start the training run and follow it to its end.

    Args:
        config: the trainer config (Arkor's `createTrainer` fields, snake_case or camelCase).
        backend: where the training runs (local processes or a Kubernetes Job).
        dataset_uri: train on this dataset instead of the config's (`s3://…`, `hf://datasets/…`
            or a file path); set by the dataset-update trigger.
        dataset_version: the dataset version that triggered this run (for the record).
        dataset_token_block: name of a Prefect Secret block holding the blob dataset's bearer
            token (never pass the token itself: parameters are stored in plain text).
        dataset_url_block: name of a Prefect Secret block holding the blob URL with its
            credentials (a presigned URL); ``config.dataset.url`` is that URL without them.
        evaluation: after training, score the new version and the champion on this set
            (`dataset`, `metrics`, `max_samples`, `generation`) and promote only what is better.
        promotion: the gate's rule (`metric`, `min_improvement`); default: the evaluation's
            first metric, any improvement.

    Returns:
        The training result: job, artifacts, metrics and ``registry`` (the MLflow model version,
        None when no registry is configured); a ``Cancelled`` state when the flow run was
        cancelled while training or evaluating; a ``Completed`` state saying so, with
        ``already_trained`` (model name, version, job id) as data, when the dataset version was
        trained before.
    """
    log = get_run_logger()
    cancel_check_seconds()  # a bad ARKOR_FLOW_CANCEL_CHECK_SECONDS fails here, before any job
    register = registration_task()  # and so do bad registry settings
    if evaluation is not None:
        gate_rule(evaluation, promotion)  # and a gate metric the evaluation does not score
    key = str(runtime.flow_run.id)
    resolved = await with_secret_refs(config, dataset_token_block, dataset_url_block)
    run_config = with_dataset(resolved, dataset_uri)
    if dataset_uri and dataset_version:
        found = await dedup_task()(run_config, dataset_uri, dataset_version)
        if found is not None:
            message = already_trained_message(dataset_uri, dataset_version, found)
            log.info(message)
            return Completed(message=message, data={"job": None, "already_trained": found})
    if dataset_uri:
        log.info("Training on %s (version %s)", dataset_uri, dataset_version or "unknown")
    job_id = await start_training(run_config, backend, key)
    try:
        outcome = await wait_for_training(run_config, backend, key, job_id)
    except TrainingFailed:
        raise
    except Exception:
        log.warning("Following training job %s failed; cancelling it", job_id)
        await cancel_training(run_config, backend, key)
        raise
    if isinstance(outcome, State):  # cancel requested: the wait task stopped the run
        return Cancelled(message=outcome.message)
    if outcome["job"]["status"] != "completed":
        return outcome
    registered = await register(run_config, backend, outcome, dataset_uri, dataset_version)
    result = {**outcome, "registry": registered}
    if evaluation is None:
        return result
    return await _evaluate(run_config, backend, key, evaluation, promotion, result)


async def _evaluate(  # noqa: PLR0917 - the flow's stage, named inputs
    config: TrainerConfig,
    backend: BackendSettings,
    key: str,
    evaluation: EvaluationSpec,
    promotion: PromotionSettings | None,
    result: dict[str, Any],
) -> dict[str, Any] | State:
    """After training: score (and with a registry, gate) the run's final adapter."""
    job_id, registered = result["job"]["id"], result["registry"]
    try:
        if registered is None:
            scored = await evaluate_only(config, backend, key, evaluation, job_id)
            return {**result, "evaluation": scored}
        gate = await evaluate_and_gate(
            config, backend, key, evaluation, promotion, registered, job_id
        )
    except EvaluationCancelledError as exc:  # cancel requested: the task stopped its job
        get_run_logger().info(str(exc))
        return Cancelled(message=str(exc))  # and nothing is promoted
    return gate_state({**result, "promotion": gate, "reason": gate["reason"]})
