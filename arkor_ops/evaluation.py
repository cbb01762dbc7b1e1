"""The evaluation config: which adapter to score, on which rows, with which metrics.

An evaluation is its own job (a Kubernetes Job, or local processes) on the trainer image: the
worker reads this config's wire form, sees ``kind: evaluation`` and runs
:mod:`arkor_ops.worker.evaluate` instead of training. Like the trainer config, fields are
snake_case with camelCase aliases, unknown fields are refused naming the field, and every
check that needs no ML stack happens here, before any job or process exists: metric names,
the user scorer's ``module:function`` syntax, the JSON Schema of ``json_schema``. Whether a user
scorer can be imported is checked by the worker, where the user's code is installed.

Metrics (see :mod:`arkor_ops.scoring` for what each one scores):

- ``loss``: the held-out loss on the reference answer's tokens (assistant turn only);
- ``json_valid``: the share of answers that parse as JSON;
- ``json_schema``: the share of answers that validate against ``json_schema``;
- ``field_match:<field>``: exact match of one JSON field (``a.b`` for nested) between answer and
  reference;
- ``exact_match``: the answer equals the reference (surrounding whitespace ignored);
- ``package.module:function``: a user scorer, ``function(prompt, answer, reference) -> float``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from arkor_ops.config import (
    AdapterRef,
    BlobDataset,
    DatasetFormat,
    DatasetSource,
    TrainerConfig,
    _loc_to_path,
    _Model,
)
from arkor_ops.errors import ConfigError
from arkor_ops.settings import DATASET_TOKEN_ENV, DATASET_URL_ENV

#: Metrics that need no argument.
BUILTIN_METRICS = ("loss", "json_valid", "json_schema", "exact_match")
FIELD_MATCH = "field_match:"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: ``package.module:function`` (a dotted import path, a colon, one name).
USER_SCORER = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")
_FIELD = re.compile(r"^[^\s.]+(\.[^\s.]+)*$")


def metric_kind(name: str) -> Literal["builtin", "field_match", "user"]:
    """What kind of metric a (validated) metric name is."""
    if name in BUILTIN_METRICS:
        return "builtin"
    if name.startswith(FIELD_MATCH):
        return "field_match"
    return "user"


def _metric_name(value: str) -> str:
    value = value.strip()
    if value in BUILTIN_METRICS:
        return value
    if value.startswith(FIELD_MATCH):
        if not _FIELD.match(value[len(FIELD_MATCH) :]):
            raise ValueError(
                "field_match needs a JSON field name after the colon, e.g. "
                "`field_match:category` (`a.b` for a nested field, no spaces)"
            )
        return value
    if USER_SCORER.match(value):
        return value
    raise ValueError(
        f"unknown metric {value[:80]!r}: one of {', '.join(BUILTIN_METRICS)}, "
        "`field_match:<field>`, or a user scorer `package.module:function`"
    )


MetricName = Annotated[str, AfterValidator(_metric_name)]


class GenerationConfig(_Model):
    """How answers are generated: greedy by default, so a score is reproducible."""

    max_new_tokens: int = Field(
        default=128, ge=1, le=32_768, description="Longest answer, in tokens."
    )
    temperature: float = Field(
        default=0.0, ge=0, le=10, description="0: greedy decoding; above 0: sampling."
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling (sampling only).")
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="Sampling seed.")

    @property
    def do_sample(self) -> bool:
        """Whether decoding samples (any temperature above 0)."""
        return self.temperature > 0


class EvaluationSpec(_Model):
    """What an evaluation scores: the rows, the metrics, how answers are generated."""

    dataset: DatasetSource = Field(
        description="The evaluation rows: chat `messages`; the last assistant turn is the "
        "reference answer, the turns before it the prompt."
    )
    dataset_format: DatasetFormat | None = Field(
        default=None, description="Row format: chat `messages` (default) or `alpaca`."
    )
    metrics: tuple[MetricName, ...] = Field(
        min_length=1, max_length=64, description="Metric names (see the module docstring)."
    )
    json_schema: dict[str, Any] | None = Field(
        default=None,
        validation_alias=AliasChoices("json_schema", "jsonSchema", "schema"),
        description="The JSON Schema answers must validate against (metric `json_schema`).",
    )
    max_samples: int | None = Field(
        default=None, gt=0, le=10_000_000, description="Score only the first N rows."
    )
    max_length: int | None = Field(
        default=None,
        gt=0,
        le=1_048_576,
        description="Longest prompt plus reference, in tokens, for `loss`; longer is truncated.",
    )
    generation: GenerationConfig = Field(
        default_factory=GenerationConfig, description="Decoding settings."
    )

    @model_validator(mode="after")
    def _consistent(self) -> EvaluationSpec:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("metrics: each metric may be listed once")
        if "json_schema" in self.metrics and self.json_schema is None:
            raise ValueError("metric json_schema needs `json_schema`: the schema answers must meet")
        if self.json_schema is not None and "json_schema" not in self.metrics:
            raise ValueError("`json_schema` is given but the metric json_schema is not listed")
        if self.dataset_format is not None and not (
            self.dataset_format.is_chat or self.dataset_format.type == "alpaca"
        ):
            raise ValueError("dataset_format text has no reference answer: use chat or alpaca")
        return self

    @model_validator(mode="after")
    def _schema_is_a_schema(self) -> EvaluationSpec:
        if self.json_schema is None:
            return self
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(self.json_schema).check_schema(self.json_schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ValueError(f"json_schema is not a valid JSON Schema at {where}: "
                             f"{exc.message[:300]}") from None  # fmt: skip
        return self


class EvaluationConfig(_Model):
    """One evaluation job: a base model, the adapter on it (or none), and what to score."""

    kind: Literal["evaluation"] = Field(
        default="evaluation", description="The stage the worker runs (always `evaluation`)."
    )
    name: str = Field(
        min_length=1, max_length=200, description="Job name, shown by the backend and kubectl."
    )
    model: str = Field(
        min_length=1,
        max_length=2048,
        description="Base model: a Hugging Face model id, a local path, or an `s3://` URI.",
    )
    revision: str | None = Field(
        default=None, min_length=1, max_length=255, description="Hub revision of `model`."
    )
    adapter: AdapterRef | None = Field(
        default=None,
        description="The adapter to score: a run's final adapter or checkpoint (by job id), "
        "or a committed prefix (`uri`); none scores the base model alone.",
    )
    evaluation: EvaluationSpec = Field(description="The rows and the metrics.")

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        return TrainerConfig._printable_name(value)  # the same rules as a run's name and model

    @field_validator("model")
    @classmethod
    def _model_fits_a_path(cls, value: str) -> str:
        return TrainerConfig._model_fits_a_path(value)

    def data_view(self) -> TrainerConfig:
        """The model and dataset fields as a trainer config: what the worker's model and data
        loading read (one code path for training rows and evaluation rows)."""
        return TrainerConfig(
            name=self.name,
            model=self.model,
            revision=self.revision,
            dataset=self.evaluation.dataset,
            dataset_format=self.evaluation.dataset_format,
        )

    # -- wire format (as TrainerConfig's) ------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The config as JSON-ready camelCase data, with secrets removed (not masked)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(self.evaluation.dataset, BlobDataset):
            data["evaluation"]["dataset"].pop("token", None)
            data["evaluation"]["dataset"].pop("signedUrl", None)
        return data

    def secret_env(self) -> dict[str, str]:
        """Secret values the job needs, as environment variables."""
        return self.data_view().secret_env()

    @classmethod
    def from_wire(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> EvaluationConfig:
        """Re-validate a config received by the worker, putting secrets back from ``env``."""
        payload = json.loads(json.dumps(dict(data)))
        env = env or {}
        spec = payload.get("evaluation")
        dataset = spec.get("dataset") if isinstance(spec, dict) else None
        if isinstance(dataset, dict) and dataset.get("type") == "blob":
            if env.get(DATASET_TOKEN_ENV):
                dataset["token"] = env[DATASET_TOKEN_ENV]
            if env.get(DATASET_URL_ENV):
                dataset["url"] = env[DATASET_URL_ENV]
        return validate_evaluation_config(payload)

    def config_hash(self) -> str:
        """sha256 of what changes the scores (not the name)."""
        data = self.to_wire()
        data.pop("name", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def is_evaluation(data: Mapping[str, Any]) -> bool:
    """Whether a wire config is an evaluation's (the worker's stage selector)."""
    return data.get("kind") == "evaluation"


def validate_evaluation_config(data: Mapping[str, Any] | EvaluationConfig) -> EvaluationConfig:
    """Validate a raw evaluation config (snake_case or camelCase).

    Args:
        data: the config as a mapping, or an already validated config.

    Returns:
        The validated, immutable config.

    Raises:
        ConfigError: listing every bad field path (``evaluation.metrics[1]``) and what is wrong.
    """
    if isinstance(data, EvaluationConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError([("", f"expected a mapping of fields, got {type(data).__name__}")])
    try:
        return EvaluationConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            problems.append((_loc_to_path(tuple(err["loc"])), msg))
        raise ConfigError(problems) from None
