"""The model registry: a completed run as an MLflow run, its adapter as a registered model version.

Optional: without ``MLFLOW_TRACKING_URI`` nothing is registered (the Prefect flows log that they
skipped it). The client is ``mlflow-skinny`` (``pip install 'arkor-ops[registry]'``), imported
only when a run is registered.

| variable | meaning |
|---|---|
| ``MLFLOW_TRACKING_URI`` | the tracking server, e.g. ``http://mlflow:5000``; unset: no registry |
| ``MLFLOW_EXPERIMENT_NAME`` | experiment of the runs (default ``arkor-ops``; created if missing) |
| ``ARKOR_REGISTRY_MODEL_NAME`` | registered model name (default: the run name made safe) |
| ``ARKOR_REGISTRY_RETRY_DELAYS_SECONDS`` | the flow task's retry delays (JSON, ``[10, 30, 90]``) |

MLflow's client reads its own variables too (``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``/``_TOKEN``,
``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``).

One MLflow run per job (tag ``arkor-ops.job_id``; registering again finds it instead of adding a
second), holding:

* params: the wire config flattened (``lora.r``, ``dataset.type``, ``maxSteps``, …): no secret,
  since the wire form has none (a blob token, a presigned URL's query string) and the S3 keys
  are never in a config; :func:`register_run` also refuses to send any value that contains a
  secret it knows of;
* metrics per step from the event stream: ``train_loss``, ``eval_loss``, ``learning_rate``
  (a step re-done after a resume replaces the earlier value);
* tags: the lineage (:class:`Lineage`), also set on the model version;
* artifacts: ``adapter/`` (the committed final adapter, each file checked against its
  ``manifest.json``; an adapter without one is refused) and ``loss.png`` when the run has one.

Reading the registry back (which version was trained on a dataset version, evaluations, the
``champion`` alias) is :mod:`arkor_ops.models`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arkor_ops.checkpoints import Manifest
from arkor_ops.config import BlobDataset, HuggingFaceDataset, S3Dataset, TrainerConfig
from arkor_ops.config import split_url_credentials as _public_url
from arkor_ops.errors import RegistryError, StorageError
from arkor_ops.events import Event, TrainingLog, TrainingResumed, TrainingStarted
from arkor_ops.settings import MlflowRegistrySettings, secret_values
from arkor_ops.storage import MANIFEST_NAME, Storage, join_uri, open_storage

log = logging.getLogger(__name__)

#: Tag prefix of the lineage tags on runs and model versions.
TAG_PREFIX = "arkor-ops."
#: Step metrics: MLflow key → ``training.log`` field.
STEP_METRICS = {"train_loss": "loss", "eval_loss": "eval_loss", "learning_rate": "learning_rate"}
#: The adapter's folder among the run's artifacts (the model version's source).
ADAPTER_PATH = "adapter"
LOSS_IMAGE = "loss.png"
_BATCH = 1000  # MLflow's log_batch limit on metrics; params go 100 at a time


class RegistrySettings(MlflowRegistrySettings):
    """Where and under which names runs are registered (see the module doc).

    The variables are :class:`arkor_ops.settings.MlflowRegistrySettings`; this adds what the
    registry needs to say about them.
    """

    def public_uri(self) -> str:
        """The tracking URI without credentials (for messages)."""
        uri = self.tracking_uri or ""
        return _public_url(uri)[0] if "://" in uri else uri


@dataclass(frozen=True)
class Lineage:
    """Where an adapter comes from; each field is a tag ``arkor-ops.<field>``."""

    job_id: str
    config_hash: str
    base_model: str
    dataset_uri: str
    dataset_version: str
    dataset_fingerprint: str
    final_adapter: str
    parent_adapter: str | None = None

    def tags(self) -> dict[str, str]:
        """The lineage as MLflow tags (``parent_adapter`` only when there is one)."""
        return {TAG_PREFIX + k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class RegisteredAdapter:
    """What :func:`register_run` registered."""

    model_name: str
    version: str
    run_id: str
    experiment_id: str
    tracking_uri: str

    def to_dict(self) -> dict[str, str]:
        """As JSON data (the tracking URI without credentials)."""
        return asdict(self)


def safe_model_name(name: str) -> str:
    """``name`` as a registered model name: no ``/`` or ``:``, no control characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._ -]+", "-", name).strip(" -") or "adapter"
    return cleaned[:256]


def registered_name(settings: RegistrySettings, config: TrainerConfig) -> str:
    """The registered model name of ``config``'s runs: the setting, else the run name made safe."""
    return settings.model_name or safe_model_name(config.name)


def flatten_params(wire: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """The wire config as MLflow params: nested keys joined with ``.``, values as text."""
    out: dict[str, str] = {}
    for key, value in wire.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def step_metrics(events: Sequence[Event]) -> dict[str, list[tuple[int, float, int]]]:
    """``(step, value, timestamp ms)`` per step metric, in step order, from a run's events.

    A ``training.resumed`` drops the values above its step: the steps re-done after it
    replace them; an evaluation logged at the same step as the training loss fills it in.
    """
    per_key: dict[str, dict[int, tuple[float, int]]] = {k: {} for k in STEP_METRICS}
    for event in events:
        if isinstance(event, TrainingResumed):
            for values in per_key.values():
                for step in [s for s in values if s > event.step]:
                    del values[step]
        elif isinstance(event, TrainingLog):
            millis = _millis(event.timestamp)
            for key, field in STEP_METRICS.items():
                value = getattr(event, field)
                if value is not None:
                    per_key[key][event.step] = (float(value), millis)
    return {
        key: [(step, v, t) for step, (v, t) in sorted(values.items())]
        for key, values in per_key.items()
        if values
    }


def _millis(timestamp: str) -> int:
    try:
        return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _dataset_uri(config: TrainerConfig) -> str:
    dataset = config.dataset
    if isinstance(dataset, HuggingFaceDataset):
        return f"hf://datasets/{dataset.name}"
    if isinstance(dataset, BlobDataset):
        return dataset.url  # never its credentials (they live in `signed_url`)
    if isinstance(dataset, S3Dataset):
        return dataset.uri
    return "file://" + os.path.abspath(dataset.path)


def _parent_adapter(wire: Mapping[str, Any], started: Mapping[str, Any], prefix: str) -> str | None:
    if started.get("initAdapter"):
        return str(started["initAdapter"])
    ref = wire.get("initAdapter")
    if not isinstance(ref, Mapping):
        return None
    if ref.get("uri"):
        return str(ref["uri"])
    root = join_uri(prefix, str(ref.get("jobId")))
    if ref.get("kind") == "final":
        return join_uri(root, "final")
    return join_uri(root, "checkpoints", f"step-{int(ref.get('step') or 0):08d}")


def lineage(
    *,
    job_id: str,
    config: TrainerConfig,
    manifest: Manifest,
    events: Sequence[Event],
    final_uri: str,
    dataset_uri: str | None = None,
    dataset_version: str | None = None,
) -> Lineage:
    """The lineage of a run's final adapter.

    The base model, config hash and dataset fingerprint come from its commit manifest; the
    dataset version is ``dataset_version`` (what the dataset watcher announced: an S3 version
    id or ETag), else the hub commit the run pinned, else ``sha256:<fingerprint>``.
    """
    started: dict[str, Any] = {}
    for event in events:
        if isinstance(event, TrainingStarted | TrainingResumed):
            started = {**started, **event.metadata}
    uri = dataset_uri or _dataset_uri(config)
    if uri.startswith(("http://", "https://")):
        uri = _public_url(uri)[0]
    version = (
        dataset_version
        or started.get("datasetRevision")
        or f"sha256:{manifest.dataset_fingerprint}"
    )
    prefix = final_uri.rstrip("/").removesuffix("/final").removesuffix("/" + job_id)
    return Lineage(
        job_id=job_id,
        config_hash=manifest.config_hash,
        base_model=manifest.base_model,
        dataset_uri=uri,
        dataset_version=str(version),
        dataset_fingerprint=manifest.dataset_fingerprint,
        final_adapter=final_uri,
        parent_adapter=_parent_adapter(config.to_wire(), started, prefix),
    )


def read_final_manifest(storage: Storage, final_uri: str) -> Manifest:
    """The final adapter's manifest.

    Raises:
        RegistryError: there is none (the adapter is not committed) or it is unreadable.
    """
    uri = join_uri(final_uri, MANIFEST_NAME)
    try:
        if not storage.exists(uri):
            raise RegistryError(
                f"the final adapter at {final_uri} is not committed (no {MANIFEST_NAME}): "
                "not registering it"
            )
        return Manifest.model_validate_json(storage.get_bytes(uri))
    except ValidationError as exc:
        raise RegistryError(
            f"{uri} is not a valid manifest: {exc.error_count()} problems"
        ) from None
    except StorageError as exc:
        raise RegistryError(f"cannot read {uri}: {exc}") from exc


def _download_adapter(storage: Storage, final_uri: str, manifest: Manifest, dest: Path) -> None:
    """The committed adapter's files (each checked against the manifest) and the manifest."""
    for entry in manifest.files:
        target = dest / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        storage.get_file(join_uri(final_uri, entry.path), target)
        digest = hashlib.sha256()
        with target.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != entry.sha256:
            raise RegistryError(f"{join_uri(final_uri, entry.path)} fails its sha256")
    storage.get_file(join_uri(final_uri, MANIFEST_NAME), dest / MANIFEST_NAME)


def _secrets(config: TrainerConfig) -> list[str]:
    values = list(config.secret_env().values())
    values += secret_values()
    return [v for v in values if len(v) >= 8]


def _refuse_secrets(sent: Mapping[str, str], secrets: Sequence[str]) -> None:
    for key, value in sent.items():
        if any(secret in value for secret in secrets):
            raise RegistryError(f"{key} would carry a secret to MLflow: not registering")


def register_run(
    settings: RegistrySettings,
    *,
    job_id: str,
    config: TrainerConfig,
    events: Sequence[Event],
    final_uri: str,
    dataset_uri: str | None = None,
    dataset_version: str | None = None,
) -> RegisteredAdapter:
    """Log a completed run to MLflow and register its final adapter as a model version.

    Registering the same job again finds its run and version instead of adding new ones; a
    run left unfinished by an earlier attempt is deleted and logged again.

    Args:
        settings: the tracking server and names (``tracking_uri`` must be set).
        job_id: the run's job id.
        config: the run's config (its wire form becomes the params).
        events: the run's events, in order (step metrics and pinned revisions).
        final_uri: the final adapter's prefix in run storage (``{storage}/{job}/final``).
        dataset_uri: the dataset the run was started on, if a trigger named it.
        dataset_version: that dataset's version (S3 version id / ETag, hub commit).

    Returns:
        The registered model version and the MLflow run.

    Raises:
        RegistryError: the adapter is not committed, a value would carry a secret, or MLflow
            failed (the adapter in storage is left as it is).
    """
    if not settings.tracking_uri:
        raise RegistryError("MLFLOW_TRACKING_URI is not set")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise RegistryError(
            "registering in MLflow needs mlflow-skinny: pip install 'arkor-ops[registry]'"
        ) from exc
    storage = open_storage(final_uri)
    manifest = read_final_manifest(storage, final_uri)
    lin = lineage(
        job_id=job_id,
        config=config,
        manifest=manifest,
        events=events,
        final_uri=final_uri,
        dataset_uri=dataset_uri,
        dataset_version=dataset_version,
    )
    params = flatten_params(config.to_wire())
    _refuse_secrets({**params, **lin.tags()}, _secrets(config))
    name = registered_name(settings, config)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        with tempfile.TemporaryDirectory(prefix="arkor-registry-") as tmp:
            run_id, experiment_id = _logged_run(
                client, settings, lin, params, step_metrics(events), storage, manifest, Path(tmp)
            )
        version = _model_version(client, name, run_id, lin)
    except (MlflowException, OSError) as exc:  # requests' errors are OSErrors
        raise RegistryError(f"MLflow at {settings.public_uri()}: {exc}") from exc
    return RegisteredAdapter(name, version, run_id, experiment_id, settings.public_uri())


def _logged_run(  # noqa: PLR0917 - one private step of register_run
    client: Any,
    settings: RegistrySettings,
    lin: Lineage,
    params: dict[str, str],
    metrics: dict[str, list[tuple[int, float, int]]],
    storage: Storage,
    manifest: Manifest,
    tmp: Path,
) -> tuple[str, str]:
    """The job's finished MLflow run (logged now unless an earlier attempt finished it)."""
    from mlflow.entities import Metric, Param, RunTag

    experiment = client.get_experiment_by_name(settings.experiment_name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(settings.experiment_name)
    )
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_PREFIX}job_id` = '{lin.job_id}'"
    )
    for run in found:
        if run.info.status == "FINISHED":
            return str(run.info.run_id), str(experiment_id)
        client.delete_run(run.info.run_id)  # half-logged by an attempt that failed
    run = client.create_run(experiment_id, tags=lin.tags(), run_name=lin.job_id)
    run_id = run.info.run_id
    items = list(params.items())
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    points = [
        Metric(key, value, millis, step)
        for key, series in metrics.items()
        for step, value, millis in series
    ]
    for i in range(0, len(points), _BATCH):
        client.log_batch(run_id, metrics=points[i : i + _BATCH])
    client.log_batch(run_id, tags=[RunTag("mlflow.note.content", _note(lin))])
    adapter = tmp / ADAPTER_PATH
    _download_adapter(storage, lin.final_adapter, manifest, adapter)
    client.log_artifacts(run_id, str(adapter), ADAPTER_PATH)
    image = _loss_image(storage, lin.final_adapter, tmp)
    if image is not None:
        client.log_artifact(run_id, str(image))
    client.set_terminated(run_id, "FINISHED")
    return str(run_id), str(experiment_id)


def _loss_image(storage: Storage, final_uri: str, tmp: Path) -> Path | None:
    root = final_uri.rstrip("/").removesuffix("/final")
    for uri in (join_uri(root, LOSS_IMAGE), join_uri(final_uri, LOSS_IMAGE)):
        if storage.exists(uri):
            target = tmp / LOSS_IMAGE
            storage.get_file(uri, target)
            return target
    return None


def _note(lin: Lineage) -> str:
    parent = f", started from `{lin.parent_adapter}`" if lin.parent_adapter else ""
    return (
        f"LoRA adapter of job `{lin.job_id}`: `{lin.base_model}` on `{lin.dataset_uri}` "
        f"(version `{lin.dataset_version}`){parent}. Final adapter: `{lin.final_adapter}`."
    )


def _model_version(client: Any, name: str, run_id: str, lin: Lineage) -> str:
    """The model version of ``run_id`` under ``name``, created (with the lineage tags) if none."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        try:
            client.create_registered_model(
                name, description="LoRA adapters trained by arkor-ops (one version per run)."
            )
        except MlflowException as race:  # another run created it meanwhile
            if race.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    existing = client.search_model_versions(f"name = '{_quote(name)}' and run_id = '{run_id}'")
    if existing:
        return str(existing[0].version)
    version = client.create_model_version(
        name,
        source=f"runs:/{run_id}/{ADAPTER_PATH}",
        run_id=run_id,
        tags=lin.tags(),
        description=_note(lin),
    )
    log.info("registered %s version %s (MLflow run %s)", name, version.version, run_id)
    return str(version.version)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
