"""Registered models: lineage queries, evaluations, the ``champion`` alias.

:mod:`arkor_ops.registry` writes a training run and its model version; this module reads and
annotates what is there, always through MLflow's own entities, so an ``mlflow`` user sees the
same thing in the MLflow UI or with ``MlflowClient``:

* :func:`find_trained`: the version already trained on a dataset version (from the version's
  lineage tags ``arkor-ops.dataset_uri`` / ``arkor-ops.dataset_version``), so a retrain is
  skipped even when Prefect has forgotten what it ran;
* :func:`record_evaluation` / :func:`evaluation_of`: one MLflow run per (version, evaluation
  set), nested under the version's training run (``mlflow.parentRunId``), holding the metrics
  under their own names and tagged ``arkor-ops.eval_dataset_id``; the version itself is tagged
  with its latest evaluation set, so a gate can tell when the champion must be scored again;
* :func:`champion` / :func:`promote`: the ``champion`` alias, and on the version who promoted it
  (``arkor-ops.promoted_by``: ``gate`` or ``person:<user>``), why and when, and which version it
  replaced (``arkor-ops.previous_champion``; that one gets ``arkor-ops.superseded_by``): the
  history of the alias can be read back version by version;
* :func:`list_models` / :func:`describe_model`: plain dataclasses for the CLI.

No Prefect here; every MLflow failure is a :class:`~arkor_ops.errors.RegistryError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from arkor_ops.config import split_url_credentials as _public_url
from arkor_ops.errors import ModelNotFoundError, RegistryError
from arkor_ops.registry import TAG_PREFIX, RegistrySettings
from arkor_ops.settings import secret_values

CHAMPION = "champion"
#: Version tags written by :func:`promote`.
PROMOTED_BY = TAG_PREFIX + "promoted_by"
PROMOTION_REASON = TAG_PREFIX + "promotion_reason"
PROMOTED_AT = TAG_PREFIX + "promoted_at"
PREVIOUS_CHAMPION = TAG_PREFIX + "previous_champion"
SUPERSEDED_BY = TAG_PREFIX + "superseded_by"
SUPERSEDED_AT = TAG_PREFIX + "superseded_at"
#: Tags of an evaluation run (and, for the latest one, of the version).
EVAL_DATASET = TAG_PREFIX + "eval_dataset_id"
EVAL_RUN = TAG_PREFIX + "eval_run_id"
EVALUATED_MODEL = TAG_PREFIX + "evaluated_model"
EVALUATED_VERSION = TAG_PREFIX + "evaluated_version"
_TAG_MAX = 5000  # MLflow's limit on a model version tag's value
_PAGE = 1000


@dataclass(frozen=True)
class VersionInfo:
    """One model version: its aliases, lineage and promotion tags, and its run's final metrics."""

    name: str
    version: str
    run_id: str | None
    status: str
    created_at: str | None
    source: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def lineage(self) -> dict[str, str]:
        """The ``arkor-ops.*`` tags without their prefix (``dataset_uri``, ``promoted_by``, …)."""
        return {
            k.removeprefix(TAG_PREFIX): v for k, v in self.tags.items() if k.startswith(TAG_PREFIX)
        }

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return {**asdict(self), "lineage": self.lineage}


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: its aliases and its versions, newest first."""

    name: str
    description: str
    aliases: dict[str, str]
    versions: list[VersionInfo]

    @property
    def champion(self) -> str | None:
        """The version holding the ``champion`` alias, if any."""
        return self.aliases.get(CHAMPION)

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return {
            "name": self.name,
            "description": self.description,
            "aliases": self.aliases,
            "champion": self.champion,
            "versions": [v.to_dict() for v in self.versions],
        }


@dataclass(frozen=True)
class ModelSummary:
    """One line of :func:`list_models`."""

    name: str
    latest_version: str | None
    champion: str | None
    versions: int
    updated_at: str | None

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return asdict(self)


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did; ``changed`` is False when the version was champion already."""

    name: str
    version: str
    previous: str | None
    promoted_by: str
    reason: str
    promoted_at: str
    changed: bool

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """A version's metrics on one evaluation set (an MLflow run of their own)."""

    name: str
    version: str
    eval_dataset_id: str
    metrics: dict[str, float]
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        """As JSON data."""
        return asdict(self)


@contextmanager
def _client(settings: RegistrySettings) -> Iterator[Any]:
    """An ``MlflowClient``; MLflow's failures come out as :class:`RegistryError`."""
    if not settings.tracking_uri:
        raise RegistryError("MLFLOW_TRACKING_URI is not set: no model registry to ask")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise RegistryError(
            "the model registry needs mlflow-skinny: pip install 'arkor-ops[registry]'"
        ) from exc
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        yield client
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {settings.public_uri()}: {exc.message}") from exc
    except OSError as exc:  # requests' errors are OSErrors
        raise RegistryError(f"MLflow at {settings.public_uri()}: {exc}") from exc


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if _missing(exc):
            raise ModelNotFoundError(f"no registered model {name!r} in MLflow") from None
        raise


def _model_version(client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    _registered_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if _missing(exc) or getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE":
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}") from None
        raise


def _quoted(value: str) -> str | None:
    """``value`` as a filter string literal, or None where MLflow's parser cannot hold it.

    MLflow strips the quotes of a literal but never unescapes it, so a value with a quote or a
    backslash is matched in Python instead (see :func:`_versions`).
    """
    return None if any(c in value for c in "'\"\\`") else f"'{value}'"


def _versions(client: Any, name: str, tags: Mapping[str, str] | None = None) -> list[Any]:
    """Every version of ``name`` (with exactly these tags), newest first, all pages."""
    clauses = [f"name = {_quoted(name)}"] if _quoted(name) else []
    for key, value in (tags or {}).items():
        literal = _quoted(value)
        if literal is not None:
            clauses.append(f"tags.`{key}` = {literal}")
    found: list[Any] = []
    token = None
    while True:
        page = client.search_model_versions(
            " and ".join(clauses) or None,
            max_results=_PAGE,
            order_by=["version_number DESC"],
            page_token=token,
        )
        found.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    return [
        v
        for v in found
        if v.name == name and all(v.tags.get(k) == want for k, want in (tags or {}).items())
    ]


def _millis_iso(millis: int | None) -> str | None:
    if not millis:
        return None
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat().replace("+00:00", "Z")


def _version_info(client: Any, v: Any, with_metrics: bool = True) -> VersionInfo:
    metrics: dict[str, float] = {}
    if with_metrics and v.run_id:
        try:
            metrics = dict(client.get_run(v.run_id).data.metrics)
        except Exception as exc:  # a deleted run: the version is still worth showing
            if not _missing(exc):
                raise
    return VersionInfo(
        name=v.name,
        version=str(v.version),
        run_id=v.run_id or None,
        status=str(v.status),
        created_at=_millis_iso(v.creation_timestamp),
        source=str(v.source or ""),
        aliases=sorted(getattr(v, "aliases", None) or []),
        tags=dict(v.tags or {}),
        metrics=metrics,
    )


def dataset_uri_as_tagged(dataset_uri: str) -> str:
    """``dataset_uri`` as the lineage tags record it (an HTTP URL without its credentials)."""
    if dataset_uri.startswith(("http://", "https://")):
        return _public_url(dataset_uri)[0]
    return dataset_uri


def find_trained(
    settings: RegistrySettings, name: str, dataset_uri: str, dataset_version: str
) -> VersionInfo | None:
    """The newest version of ``name`` trained on ``dataset_uri`` at ``dataset_version``.

    Read from the versions' lineage tags, so it holds whatever Prefect remembers.

    Returns:
        That version (without its run's metrics), or None (also when the model does not exist).

    Raises:
        RegistryError: MLflow failed or is not configured.
    """
    tags = {
        TAG_PREFIX + "dataset_uri": dataset_uri_as_tagged(dataset_uri),
        TAG_PREFIX + "dataset_version": dataset_version,
    }
    with _client(settings) as client:
        try:
            _registered_model(client, name)
        except ModelNotFoundError:
            return None
        found = _versions(client, name, tags)
        return _version_info(client, found[0], with_metrics=False) if found else None


def champion(settings: RegistrySettings, name: str) -> VersionInfo | None:
    """The version holding the ``champion`` alias, or None (no champion, or no such model).

    Raises:
        RegistryError: MLflow failed or is not configured.
    """
    with _client(settings) as client:
        try:
            model = _registered_model(client, name)
        except ModelNotFoundError:
            return None
        version = _aliases(model).get(CHAMPION)
        if version is None:
            return None
        return _version_info(client, client.get_model_version(name, version))


def _aliases(model: Any) -> dict[str, str]:
    raw = getattr(model, "aliases", None) or {}
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    return {str(a.alias): str(a.version) for a in raw}


def _check_by(by: str) -> None:
    if by != "gate" and not (by.startswith("person:") and len(by) > len("person:")):
        raise ValueError(f"promoted_by must be 'gate' or 'person:<user>', not {by!r}")


def _refuse_secrets(text: str) -> None:
    secrets = secret_values(8)
    if any(secret in text for secret in secrets):
        raise RegistryError("the promotion reason would carry a secret to MLflow: not promoting")


def promote(
    settings: RegistrySettings, name: str, version: str, *, reason: str, by: str
) -> Promotion:
    """Give ``version`` the ``champion`` alias, recording who, why, when and what it replaced.

    The tags are written before the alias moves, so a promotion that fails halfway leaves the
    old champion in place (and a retry completes it). Promoting the champion again changes
    nothing.

    Args:
        settings: the tracking server.
        name: the registered model.
        version: the version to promote.
        reason: why, in a sentence (the gate's decision, or a person's words).
        by: ``gate`` or ``person:<user>``.

    Returns:
        What was done.

    Raises:
        ModelNotFoundError: no such model or version.
        RegistryError: MLflow failed or is not configured, or the reason holds a secret.
        ValueError: ``by`` is neither ``gate`` nor ``person:<user>``.
    """
    _check_by(by)
    _refuse_secrets(reason)
    version = str(version)
    with _client(settings) as client:
        target = _model_version(client, name, version)
        previous = _aliases(_registered_model(client, name)).get(CHAMPION)
        if previous == version:
            tags = target.tags or {}
            return Promotion(
                name,
                version,
                tags.get(PREVIOUS_CHAMPION),
                tags.get(PROMOTED_BY, by),
                tags.get(PROMOTION_REASON, reason),
                tags.get(PROMOTED_AT, ""),
                changed=False,
            )
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        tags = {PROMOTED_BY: by, PROMOTION_REASON: reason[:_TAG_MAX], PROMOTED_AT: now}
        if previous is not None:
            tags[PREVIOUS_CHAMPION] = previous
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if previous is not None:
            client.set_model_version_tag(name, previous, SUPERSEDED_BY, version)
            client.set_model_version_tag(name, previous, SUPERSEDED_AT, now)
        client.set_registered_model_alias(name, CHAMPION, version)
    return Promotion(name, version, previous, by, reason, now, changed=True)


def list_models(settings: RegistrySettings) -> list[ModelSummary]:
    """Every registered model, by name, with its newest version and its champion.

    Raises:
        RegistryError: MLflow failed or is not configured.
    """
    out: list[ModelSummary] = []
    with _client(settings) as client:
        models: list[Any] = []
        token = None
        while True:
            page = client.search_registered_models(max_results=_PAGE, page_token=token)
            models.extend(page)
            token = getattr(page, "token", None)
            if not token:
                break
        for model in sorted(models, key=lambda m: str(m.name)):
            versions = _versions(client, model.name)
            out.append(
                ModelSummary(
                    name=model.name,
                    latest_version=str(versions[0].version) if versions else None,
                    champion=_aliases(model).get(CHAMPION),
                    versions=len(versions),
                    updated_at=_millis_iso(model.last_updated_timestamp),
                )
            )
    return out


def describe_model(settings: RegistrySettings, name: str) -> ModelInfo:
    """A registered model with every version's aliases, tags and final run metrics.

    Raises:
        ModelNotFoundError: no such model.
        RegistryError: MLflow failed or is not configured.
    """
    with _client(settings) as client:
        model = _registered_model(client, name)
        aliases = _aliases(model)
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(version, []).append(alias)
        versions = []
        for v in _versions(client, name):
            info = _version_info(client, v)
            extra = by_version.get(info.version, [])
            versions.append(
                VersionInfo(**{**asdict(info), "aliases": sorted({*info.aliases, *extra})})
            )
        return ModelInfo(name, str(model.description or ""), aliases, versions)


def _eval_tags(name: str, version: str, eval_dataset_id: str) -> dict[str, str]:
    return {EVALUATED_MODEL: name, EVALUATED_VERSION: version, EVAL_DATASET: eval_dataset_id}


def _eval_runs(client: Any, experiment_id: str, tags: Mapping[str, str]) -> list[Any]:
    clauses = [f"tags.`{k}` = {_quoted(v)}" for k, v in tags.items() if _quoted(v) is not None]
    runs = client.search_runs([experiment_id], filter_string=" and ".join(clauses))
    return [r for r in runs if all(r.data.tags.get(k) == v for k, v in tags.items())]


def _experiment_of(client: Any, settings: RegistrySettings, run_id: str | None) -> str:
    if run_id:
        return str(client.get_run(run_id).info.experiment_id)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(client.create_experiment(settings.experiment_name))


def record_evaluation(
    settings: RegistrySettings,
    name: str,
    version: str,
    metrics: Mapping[str, float],
    eval_dataset_id: str,
) -> Evaluation:
    """Log ``version``'s metrics on an evaluation set as an MLflow run of its own.

    The run sits in the training run's experiment, nested under it (``mlflow.parentRunId``),
    named ``eval-v<version>``, tagged with the model, the version and ``eval_dataset_id``;
    the metrics keep their names (``loss``, ``json_valid``, ``field_match:priority``). The
    version gets ``arkor-ops.eval_dataset_id`` and ``arkor-ops.eval_run_id`` of this latest
    evaluation. Scoring the same version on the same set again replaces the earlier run.

    Args:
        settings: the tracking server.
        name: the registered model.
        version: the evaluated version.
        metrics: metric name → value.
        eval_dataset_id: what identifies the evaluation set (its URI and version, a digest):
            two scores are comparable only under the same id.

    Returns:
        The recorded evaluation.

    Raises:
        ModelNotFoundError: no such model or version.
        RegistryError: MLflow failed (a metric name it refuses, say) or is not configured.
    """
    from mlflow.entities import Metric

    version = str(version)
    eval_id = dataset_uri_as_tagged(eval_dataset_id)
    values = {str(k): float(v) for k, v in metrics.items()}
    tags = _eval_tags(name, version, eval_id)
    with _client(settings) as client:
        target = _model_version(client, name, version)
        experiment_id = _experiment_of(client, settings, target.run_id)
        for old in _eval_runs(client, experiment_id, tags):
            client.delete_run(old.info.run_id)
        run_tags = {
            **tags,
            "mlflow.note.content": f"Evaluation of `{name}` version {version} on `{eval_id}`.",
        }
        if target.run_id:
            run_tags["mlflow.parentRunId"] = target.run_id
        run = client.create_run(experiment_id, tags=run_tags, run_name=f"eval-v{version}")
        run_id = str(run.info.run_id)
        millis = int(datetime.now(UTC).timestamp() * 1000)
        points = [Metric(k, v, millis, 0) for k, v in values.items()]
        for i in range(0, len(points), _PAGE):
            client.log_batch(run_id, metrics=points[i : i + _PAGE])
        client.set_terminated(run_id, "FINISHED")
        client.set_model_version_tag(name, version, EVAL_DATASET, eval_id)
        client.set_model_version_tag(name, version, EVAL_RUN, run_id)
    return Evaluation(name, version, eval_id, values, run_id)


def evaluation_of(
    settings: RegistrySettings, name: str, version: str, eval_dataset_id: str
) -> Evaluation | None:
    """``version``'s recorded metrics on the evaluation set ``eval_dataset_id``, if any.

    None means it was never scored on that set (or the set changed): score it again.

    Raises:
        ModelNotFoundError: no such model or version.
        RegistryError: MLflow failed or is not configured.
    """
    version = str(version)
    eval_id = dataset_uri_as_tagged(eval_dataset_id)
    with _client(settings) as client:
        target = _model_version(client, name, version)
        experiment_id = _experiment_of(client, settings, target.run_id)
        runs = [
            r
            for r in _eval_runs(client, experiment_id, _eval_tags(name, version, eval_id))
            if r.info.status == "FINISHED"
        ]
        if not runs:
            return None
        run = max(runs, key=lambda r: r.info.start_time or 0)
        return Evaluation(name, version, eval_id, dict(run.data.metrics), str(run.info.run_id))
