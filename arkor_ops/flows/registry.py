"""The ``register_adapter`` task: a completed training run into the MLflow model registry.

It runs after a training run completed (see :mod:`arkor_ops.registry` for what is logged and
the settings). Without ``MLFLOW_TRACKING_URI`` it logs that it skipped registration and returns
None. A failure (MLflow unreachable, a refusal) is retried with the delays of
``ARKOR_REGISTRY_RETRY_DELAYS_SECONDS``; after the last one the task, and so the flow run, fails
with the reason and where the adapter is. The trained adapter is never deleted or changed.

``trained_version`` runs before a training on a dataset version: the model version the registry
already has for it (from its lineage tags), so the flow can skip the run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from arkor_ops.backends import resolve_backend
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import RegistryError, StreamError
from arkor_ops.events import Event, parse_event
from arkor_ops.flows.settings import BackendSettings
from arkor_ops.follow import follow
from arkor_ops.models import find_trained
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.registry import RegistrySettings, register_run, registered_name

#: Reading a finished run's events: ``wait()``'s backoff, a few attempts (the task retries too).
READ_POLICY = ReconnectPolicy(max_attempts=5)
SKIPPED = "MLflow registry not configured (MLFLOW_TRACKING_URI unset): skipped registration"


async def run_events(
    settings: BackendSettings, job_id: str, policy: ReconnectPolicy = READ_POLICY
) -> list[Event]:
    """Every event of a finished run, in order, up to its terminal event.

    The backend replays the run's log (the sidecar while it lingers, storage once it is gone);
    a stream that breaks off (the sidecar exiting meanwhile) is resumed after the last event
    read, with ``wait()``'s backoff and reconnect rules (:func:`arkor_ops.follow.follow`),
    ``policy.max_attempts`` times in a row at most.

    Raises:
        StreamError: the stream failed fatally.
        ReconnectGiveUpError: it failed ``policy.max_attempts`` times in a row.
    """
    events: list[Event] = []
    async with resolve_backend(settings.backend, **settings.overrides()) as backend:
        frames = follow(
            lambda after: backend.events(job_id, after),
            policy=policy,
            name=f"event stream of {job_id}",
        )
        async with contextlib.aclosing(frames):
            async for frame in frames:
                if frame.is_end:
                    return events
                event = parse_event(frame.data)
                if event is not None:
                    events.append(event)
                    if event.terminal:
                        return events
        raise StreamError(f"the event stream of {job_id} closed before its end")


def final_adapter(result: dict[str, Any]) -> str:
    """The final adapter's prefix in a training result (``wait_for_training``'s data)."""
    for artifact in result.get("artifacts") or []:
        if artifact.get("kind") == "final":
            return str(artifact["uri"])
    job = (result.get("job") or {}).get("id")
    raise RegistryError(f"training run {job} reported no final adapter: nothing to register")


@task(task_run_name="register-adapter")
async def register_adapter(
    config: TrainerConfig,
    settings: BackendSettings,
    result: dict[str, Any],
    dataset_uri: str | None = None,
    dataset_version: str | None = None,
) -> dict[str, str] | None:
    """Log the completed run to MLflow and register its final adapter as a model version.

    Returns:
        The registered model name, version and MLflow run id; None when no registry is
        configured.

    Raises:
        RegistryError: registration failed; the adapter stays in run storage.
    """
    log = get_run_logger()
    registry = RegistrySettings()
    if not registry.tracking_uri:
        log.info(SKIPPED)
        return None
    job_id = str(result["job"]["id"])
    final = final_adapter(result)
    events = await run_events(settings, job_id)
    try:
        registered = await asyncio.to_thread(
            register_run,
            registry,
            job_id=job_id,
            config=config,
            events=events,
            final_uri=final,
            dataset_uri=dataset_uri,
            dataset_version=dataset_version,
        )
    except RegistryError as exc:
        raise RegistryError(f"{exc} (the adapter stays at {final})") from exc
    log.info(
        "Registered %s version %s in MLflow at %s (run %s)",
        registered.model_name,
        registered.version,
        registered.tracking_uri,
        registered.run_id,
    )
    return registered.to_dict()


def already_trained_message(dataset_uri: str, dataset_version: str, found: dict[str, str]) -> str:
    """What a flow run that skips a dataset version already trained ends with."""
    return (
        f"dataset {dataset_uri} version {dataset_version} already trained: "
        f"{found['model_name']} v{found['version']}"
    )


@task(task_run_name="find-trained-version")
async def trained_version(
    config: TrainerConfig, dataset_uri: str, dataset_version: str
) -> dict[str, str] | None:
    """The model version already trained on this dataset version, from its lineage tags.

    The registry, not Prefect, remembers what was trained: this holds after the Prefect
    database is reset, or when another server triggered the first run.

    Returns:
        ``model_name``, ``version`` and ``job_id`` of that version; None when there is none or
        no registry is configured.

    Raises:
        RegistryError: MLflow failed (the task's retries come first).
    """
    registry = RegistrySettings()
    if not registry.tracking_uri:
        return None
    name = registered_name(registry, config)
    found = await asyncio.to_thread(find_trained, registry, name, dataset_uri, dataset_version)
    if found is None:
        return None
    return {
        "model_name": name,
        "version": found.version,
        "job_id": found.tags.get("arkor-ops.job_id", ""),
    }


def registration_task() -> Any:
    """``register_adapter`` with the retries of :class:`RegistrySettings` (read now)."""
    return _with_retries(register_adapter)


def dedup_task() -> Any:
    """``trained_version`` with the retries of :class:`RegistrySettings` (read now)."""
    return _with_retries(trained_version)


def _with_retries(registry_task: Any) -> Any:
    delays = RegistrySettings().retry_delays_seconds
    return registry_task.with_options(retries=len(delays), retry_delay_seconds=delays or 0)
