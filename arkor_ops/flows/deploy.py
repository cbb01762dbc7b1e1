"""The deployments, built in code and served by a runner (``serve()``): works offline.

| deployment | flow | how runs start |
|---|---|---|
| ``fine-tune/fine-tune`` | ``fine_tune`` | from the UI or the API, with a typed parameter form |
| ``fine-tune/retrain-nightly`` | ``fine_tune`` | cron schedule, with the retrain config |
| ``fine-tune/retrain-on-dataset-update`` | ``fine_tune`` | ``arkor-ops.dataset.updated`` (*) |
| ``watch-datasets/dataset-watcher`` | ``watch_datasets`` | interval; emits those events |
| ``reap-orphaned-runs/reaper`` | ``reap_orphans`` | interval |

(*) only for the datasets in ``ARKOR_WATCH_DATASETS``: any API client may emit the event.

``python -m arkor_ops.flows.deploy`` serves them against ``$PREFECT_API_URL`` (see ``arkor-ops
dev`` for a local server too). Settings come from the environment: ``ARKOR_RETRAIN_CONFIG`` (a YAML
or JSON trainer config for the retrain deployments; they are skipped without one),
``ARKOR_RETRAIN_EVALUATION`` (a YAML or JSON file with ``evaluation`` and ``promotion``: the
retrain runs then evaluate and promote only what is better, see :mod:`.evaluation`),
``ARKOR_WATCH_DATASETS`` (comma-separated dataset URIs), ``ARKOR_RETRAIN_CRON`` (default ``0 3 * *
*``) and ``ARKOR_BACKEND``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.types.entrypoint import EntrypointType
from pydantic import BaseModel, ConfigDict, model_validator

from arkor_ops.config import TrainerConfig, validate_config
from arkor_ops.evaluation import EvaluationSpec
from arkor_ops.flows.evaluation import gate_rule
from arkor_ops.flows.fine_tune import fine_tune
from arkor_ops.flows.reaper import reap_orphans
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.flows.watcher import EVENT, RESOURCE_PREFIX, URI_LABEL, VERSION_LABEL, watch_datasets
from arkor_ops.promotion import PromotionSettings
from arkor_ops.settings import DEFAULT_CRON, FlowSettings, read


def watched_patterns(watched: Sequence[str]) -> list[str]:
    """Prefect match patterns for the watched URIs: exact, or ``prefix*`` for a ``…/`` prefix."""
    return [uri + "*" if uri.endswith("/") else uri for uri in watched]


def dataset_trigger(watched: Sequence[str]) -> DeploymentEventTrigger:
    """The trigger that starts a retrain for each ``arkor-ops.dataset.updated`` event.

    The event's dataset URI and version become the run's ``dataset_uri``/``dataset_version``.
    Any API client may emit that event, so it matches only datasets in ``watched`` (the
    watcher's own list): on the resource id *and* on the URI label the run's ``dataset_uri``
    is read from. An event naming any other URI starts nothing.

    Raises:
        ValueError: ``watched`` is empty (the trigger would have nothing to react to).
    """
    if not watched:
        raise ValueError("a dataset trigger needs the watched dataset URIs (ARKOR_WATCH_DATASETS)")
    patterns = watched_patterns(watched)
    return DeploymentEventTrigger(
        name="dataset-updated",
        expect={EVENT},
        match={
            "prefect.resource.id": [RESOURCE_PREFIX + p for p in patterns],
            URI_LABEL: patterns,
        },
        parameters={
            "dataset_uri": f"{{{{ event.resource.get('{URI_LABEL}') }}}}",
            "dataset_version": f"{{{{ event.resource.get('{VERSION_LABEL}') }}}}",
        },
    )


class RetrainGate(BaseModel):
    """What ``ARKOR_RETRAIN_EVALUATION`` holds (YAML or JSON): the evaluation set and metrics,
    and the promotion rule, given to the retrain deployments as their ``evaluation`` and
    ``promotion`` parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    evaluation: EvaluationSpec
    promotion: PromotionSettings | None = None

    @model_validator(mode="after")
    def _metric_is_scored(self) -> RetrainGate:
        gate_rule(self.evaluation, self.promotion)
        return self


def config_parameter(config: TrainerConfig) -> dict[str, Any]:
    """The config as a deployment parameter: the shape of the UI form's JSON schema, no secrets."""
    return config.to_wire()


def build_deployments(
    *,
    backend: BackendSettings | None = None,
    retrain_config: TrainerConfig | None = None,
    retrain_gate: RetrainGate | None = None,
    watched: list[str] | None = None,
    cron: str = DEFAULT_CRON,
    watch_interval_seconds: int = 60,
    reap_interval_seconds: int = 300,
    suffix: str = "",
) -> list[RunnerDeployment]:
    """The deployments to serve.

    Args:
        backend: backend settings given to every training and reaper run.
        retrain_config: the config of the retrain deployments; they are left out without one.
        retrain_gate: the evaluation set and the promotion rule of the retrain deployments:
            with it, each retrain run ends by promoting only what evaluates better.
        watched: dataset URIs for the watcher, and the only ones the dataset trigger accepts;
            without any, the watcher and ``retrain-on-dataset-update`` are left out.
        cron: schedule of ``retrain-nightly``.
        watch_interval_seconds: how often the watcher checks the datasets.
        reap_interval_seconds: how often the reaper runs.
        suffix: appended to every deployment name (tests serve several sets on one server).
    """
    settings = (backend or BackendSettings()).model_dump(mode="json", exclude_none=True)
    # `_sync`: build synchronously even when called from a coroutine (tests, async callers)
    common: dict[str, Any] = {"entrypoint_type": EntrypointType.MODULE_PATH, "_sync": True}
    out: list[Any] = [  # RunnerDeployments: `_sync` makes to_deployment return one, not a coroutine
        fine_tune.to_deployment(
            name=f"fine-tune{suffix}",
            parameters={"backend": settings},
            description="Fine-tune a model with LoRA; fill in the trainer config.",
            **common,
        ),
        reap_orphans.to_deployment(
            name=f"reaper{suffix}",
            interval=reap_interval_seconds,
            parameters={"backend": settings},
            concurrency_limit=1,
            description="Stop training runs whose flow run has ended.",
            **common,
        ),
    ]
    if retrain_config is not None:
        params = {
            "config": config_parameter(retrain_config),
            "backend": settings,
        }
        if retrain_gate is not None:
            params.update(retrain_gate.model_dump(mode="json", by_alias=True, exclude_none=True))
        out.append(
            fine_tune.to_deployment(
                name=f"retrain-nightly{suffix}",
                cron=cron,
                parameters=params,
                description="Scheduled retraining with the retrain config.",
                **common,
            )
        )
        if watched:
            out.append(
                fine_tune.to_deployment(
                    name=f"retrain-on-dataset-update{suffix}",
                    parameters=params,
                    triggers=[dataset_trigger(watched)],
                    description="Retrain on each new version of a watched dataset.",
                    **common,
                )
            )
    if watched:
        out.append(
            watch_datasets.to_deployment(
                name=f"dataset-watcher{suffix}",
                interval=watch_interval_seconds,
                parameters={"datasets": list(watched)},
                concurrency_limit=1,
                description="Announce each new version of the watched datasets.",
                **common,
            )
        )
    return out


def from_env(suffix: str = "") -> list[RunnerDeployment]:
    """The deployments configured by the environment (see the module docstring); ``suffix`` is
    appended to their names."""
    from arkor_ops.loader import load_config_data

    s = read(FlowSettings, what="flow settings")
    config = validate_config(load_config_data(s.retrain_config)) if s.retrain_config else None
    gate_data = load_config_data(s.retrain_evaluation) if s.retrain_evaluation else None
    gate = RetrainGate.model_validate(gate_data) if gate_data is not None else None
    return build_deployments(
        retrain_config=config,
        retrain_gate=gate,
        watched=s.watched(),
        cron=s.retrain_cron,
        suffix=suffix,
    )


def main() -> None:
    """Serve the deployments from the environment until interrupted."""
    serve(*from_env())


if __name__ == "__main__":
    main()
