"""The trainer config: every ``createTrainer`` field, validated locally.

Field names are snake_case; Arkor's camelCase names are accepted as aliases, so a config copied
from the Arkor docs loads unchanged. Unknown fields, wrong types and impossible values raise
:class:`~arkor_ops.errors.ConfigError` naming each bad field path.

Secrets (the blob dataset token) are :class:`pydantic.SecretStr`: they never appear in
:meth:`TrainerConfig.to_wire`, a repr, or a log line. Backends hand them to the run separately
(:meth:`TrainerConfig.secret_env`), and the worker puts them back (:meth:`TrainerConfig.from_wire`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from arkor_ops.errors import ConfigError
from arkor_ops.settings import DATASET_TOKEN_ENV, DATASET_URL_ENV

#: Largest seed numpy (and so Hugging Face's ``set_seed``) accepts.
MAX_SEED = 2**32 - 1
#: More optimizer steps than any run takes; the bound keeps step counts plain integers.
MAX_STEPS = 1_000_000_000
#: The ``OptimizerNames`` and ``SchedulerType`` values of transformers that the worker can build
#: as configured: no extra package beyond the image's (bitsandbytes for ``*_8bit``, ``paged_*``)
#: and no scheduler arguments the config cannot give. tests/worker/test_config_fuzz.py builds
#: each with the installed transformers; the core itself does not import it.
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adafactor", "ademamix", "sgd", "adagrad",
    "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit",
    "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
    "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit",
)  # fmt: skip
LR_SCHEDULERS = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "reduce_lr_on_plateau", "greedy",
)  # fmt: skip


class _Model(BaseModel):
    """Strict base: unknown fields are errors; camelCase aliases are accepted."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,  # inf/NaN epochs or rates validate nowhere downstream
    )


# --- dataset sources ------------------------------------------------------------------------


class HuggingFaceDataset(_Model):
    """A dataset from the Hugging Face Hub (or the local Hub cache, when offline)."""

    type: Literal["huggingface"] = Field(description="Source kind.")
    name: str = Field(
        min_length=1, description="Hub dataset id, e.g. `arkorlab/triage-demo`, or a local path."
    )
    split: str = Field(default="train", min_length=1, description="Split to train on.")
    subset: str | None = Field(default=None, description="Hub config (subset) name.")
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description=(
            "Hub revision of the dataset: a branch, tag or commit (default: the default branch). "
            "The commit it resolves to is pinned for the run and part of the fingerprint."
        ),
    )


def split_url_credentials(url: str) -> tuple[str, bool]:
    """``url`` without its query string, fragment and userinfo, and whether it had any.

    A presigned URL's signature (``?X-Amz-Signature=…``, ``?sig=…``) and ``user:pass@`` are
    credentials: what is left (scheme, host, port, path) is safe to show and store.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    public = f"{parts.scheme}://{host}{port}{parts.path}"
    return public, bool(parts.query or parts.fragment or "@" in parts.netloc)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BlobDataset(_Model):
    """A file fetched once over HTTP(S) at run start: JSONL, JSON, CSV or Parquet.

    The query string and userinfo of ``url`` are treated as credentials (a presigned URL's
    signature, ``?sig=``, ``user:pass@``): validation moves the URL as given into
    ``signed_url`` (a secret, like ``token``) and leaves ``url`` without them, so the config's
    wire form, the stored ``config.json``, checkpoint manifests and ``TrainingJob.config`` never
    hold them; the run gets the full URL through its Secret (``ARKOR_DATASET_URL``).

    Credentials over plain ``http://`` are refused, except to a loopback host (``localhost``,
    127.0.0.0/8, ``::1``): there they never leave the machine, and that is how local runs and
    the tests serve files.
    """

    type: Literal["blob"] = Field(description="Source kind.")
    url: str = Field(
        pattern=r"^https?://",
        description="HTTP(S) URL of the dataset file; its query string and userinfo are "
        "secret (kept in `signed_url`, removed here).",
    )
    token: SecretStr | None = Field(
        default=None, description="Sent as `Authorization: Bearer <token>`; never logged."
    )
    signed_url: SecretStr | None = Field(
        default=None,
        description="Set from `url` when it carries credentials (query string, userinfo): the "
        "URL as given, used only to download; never in the wire form.",
    )

    @model_validator(mode="before")
    @classmethod
    def _split_url(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        url = data["url"].strip()
        public, secret = split_url_credentials(url)
        if not secret:
            return data
        if data.get("signed_url") is not None or data.get("signedUrl") is not None:
            raise ValueError("give the URL with its credentials as `url`, not `signed_url`")
        return {**data, "url": public, "signed_url": url}

    @model_validator(mode="after")
    def _credentials_need_tls(self) -> BlobDataset:
        for name, secret in (("token", self.token), ("signed_url", self.signed_url)):
            if secret is not None and set(secret.get_secret_value()) == {"*"}:
                raise ValueError(
                    f"`{name}` is the masked placeholder '**********', not a secret: the real "
                    "value was lost when the config was serialized; pass it by reference (a "
                    "Prefect flow takes a Secret block's name, see docs/prefect.md)"
                )
        if self.signed_url is not None:
            public, _ = split_url_credentials(self.signed_url.get_secret_value())
            if public != self.url:
                raise ValueError("`signed_url` must be `url` with its credentials")
        parts = urlsplit(self.url)
        if (
            parts.scheme == "http"
            and (self.token is not None or self.signed_url is not None)
            and not _is_loopback(parts.hostname or "")
        ):
            raise ValueError(
                "credentials (a token, a query string or user:pass@) over plain http:// would "
                "travel in clear text: use https:// (plain http is allowed only to a loopback "
                "host)"
            )
        return self

    def fetch_url(self) -> str:
        """The URL to download from: with its credentials (``signed_url``) when it had any."""
        return self.signed_url.get_secret_value() if self.signed_url is not None else self.url


class S3Dataset(_Model):
    """A dataset file in S3-compatible storage."""

    type: Literal["s3"] = Field(description="Source kind.")
    uri: str = Field(
        pattern=r"^s3://[^/]+/.+", description="`s3://bucket/key` of the dataset file."
    )


class FileDataset(_Model):
    """A dataset file on the local disk (local runs and tests)."""

    type: Literal["file"] = Field(description="Source kind.")
    path: str = Field(min_length=1, description="Path of a JSONL, JSON, CSV or Parquet file.")


DatasetSource = Annotated[
    HuggingFaceDataset | BlobDataset | S3Dataset | FileDataset, Field(discriminator="type")
]


# --- nested settings ------------------------------------------------------------------------


class LoraConfig(_Model):
    """LoRA adapter settings. `r` and `alpha` are required whenever `lora` is given."""

    r: int = Field(gt=0, le=1024, description="LoRA rank.")
    alpha: int = Field(gt=0, le=4096, description="LoRA alpha (scaling numerator).")
    max_length: int | None = Field(
        default=None,
        gt=0,
        le=1_048_576,
        description="Max sequence length in tokens; longer rows are truncated.",
    )
    load_in_4bit: bool = Field(
        default=False,
        validation_alias=AliasChoices("loadIn4bit", "load_in_4bit", "loadIn4Bit"),
        serialization_alias="loadIn4bit",
        description="QLoRA: load the base model in 4 bit (bitsandbytes nf4).",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: tuple[str, ...] | None = Field(
        default=None,
        description="Module names to adapt; default: all attention and MLP projections.",
    )


class StepConfig(_Model):
    """A step cadence: an absolute number of steps or a ratio of the total steps (0 < ratio < 1)."""

    steps: int | None = Field(
        default=None, ge=0, le=MAX_STEPS, description="Every this many optimizer steps."
    )
    ratio: float | None = Field(default=None, ge=0, lt=1, description="Fraction of total steps.")

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a step count or {steps: N} / {ratio: R}")
        if isinstance(value, int):
            return {"steps": value}
        if isinstance(value, float):
            return {"ratio": value} if 0 <= value < 1 else {"steps": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> StepConfig:
        if (self.steps is None) == (self.ratio is None):
            raise ValueError("give exactly one of `steps` or `ratio`")
        return self

    def resolve(self, total_steps: int | None) -> int | float:
        """The value for Hugging Face `*_steps` arguments (a float below 1 means a ratio)."""
        if self.steps is not None:
            return self.steps
        assert self.ratio is not None
        return self.ratio


DatasetFormatType = Literal["chatml", "messages", "alpaca", "text"]


class DatasetFormat(_Model):
    """How rows are turned into training text.

    `chatml`/`messages`: OpenAI `messages` rendered with the model's chat template (default);
    `alpaca`: `instruction`/`input`/`output`; `text`: a plain `text` column.
    """

    type: DatasetFormatType = Field(default="chatml", description="Row format.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @property
    def is_chat(self) -> bool:
        """Whether rows are chat `messages`."""
        return self.type in ("chatml", "messages")


class DatasetSplit(_Model):
    """Hold out part of the rows for evaluation."""

    enabled: bool = Field(default=False, description="Whether to hold out an eval split.")
    test_size: float = Field(default=0.1, gt=0, le=1, description="Fraction of rows held out.")
    seed: int = Field(default=42, ge=0, le=MAX_SEED, description="Shuffle seed of the split.")


ResumePolicy = Literal["auto", "never", "force"]


class EarlyStopping(_Model):
    """Stop when the eval loss stops improving (the run still ends `completed`)."""

    metric: Literal["eval_loss"] = Field(
        default="eval_loss", description="What must improve: the held-out loss."
    )
    patience: int = Field(
        ge=1, le=10_000, description="Evaluations in a row without an improvement before stopping."
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="How much lower than the best a loss must be to count."
    )


#: A job id as storage paths use it (a DNS label: never a `/` or `..`).
_JOB_ID = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"


class AdapterRef(_Model):
    """The adapter a run starts from: a committed checkpoint or the final adapter of a run.

    Arkor's adapter shape (``{kind: "checkpoint", jobId, step}`` / ``{kind: "final", jobId}``),
    in this backend's storage; or ``uri``, the prefix of any committed one (it holds
    ``manifest.json``). ``arkor-ops checkpoints JOB --json`` prints each one's ref.
    """

    kind: Literal["checkpoint", "final"] = Field(
        default="checkpoint", description="A run's checkpoint (with `step`) or its final adapter."
    )
    job_id: str | None = Field(default=None, description="The run it comes from (its job id).")
    step: int | None = Field(default=None, ge=0, description="The checkpoint's step.")
    uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Instead of job_id: its prefix, `s3://bucket/.../checkpoints/step-00000050`.",
    )

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, value: str | None) -> str | None:
        if value is not None and not re.match(_JOB_ID, value):
            raise ValueError(
                "must be a job id as `arkor-ops list` shows it (lowercase letters, digits, "
                "'-' and '.')"
            )
        return value

    @model_validator(mode="after")
    def _one_target(self) -> AdapterRef:
        if (self.uri is None) == (self.job_id is None):
            raise ValueError("give job_id (and step, for a checkpoint) or uri, not both")
        if self.uri is not None:
            parts = urlsplit(self.uri)
            if parts.scheme not in ("s3", "file") or parts.username or parts.query:
                raise ValueError(
                    "uri must be an s3:// or file:// prefix without credentials or query"
                )
            if ".." in parts.path.split("/"):
                raise ValueError("uri must not contain '..'")
        elif self.kind == "checkpoint" and self.step is None:
            raise ValueError("a checkpoint needs its step (or kind: final for the final adapter)")
        elif self.kind == "final" and self.step is not None:
            raise ValueError("kind final takes no step (the final adapter is the run's last)")
        return self


# --- the trainer config ---------------------------------------------------------------------


class TrainerConfig(_Model):
    """Everything `create_trainer` needs to describe one LoRA fine-tuning run."""

    name: str = Field(
        min_length=1, max_length=200, description="Run name, shown by the backend and kubectl."
    )
    model: str = Field(
        min_length=1,
        max_length=2048,
        description="Base model: a Hugging Face model id, a local path, or an `s3://` URI.",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description=(
            "Hub revision of `model`: a branch, tag or commit (default: the default branch). "
            "The commit it resolves to is recorded and reused by every retry and resume."
        ),
    )
    dataset: DatasetSource = Field(
        validation_alias=AliasChoices("dataset", "datasetSource", "dataset_source"),
        description="Where the training rows come from.",
    )
    lora: LoraConfig | None = Field(
        default=None, description="LoRA settings; backend defaults when absent."
    )
    max_steps: int | None = Field(
        default=None, gt=0, le=MAX_STEPS, description="Cap on optimizer steps."
    )
    num_train_epochs: float | None = Field(
        default=None, gt=0, le=100_000, description="Epochs (alternative to max_steps)."
    )
    learning_rate: float | None = Field(default=None, gt=0, lt=1, description="Peak learning rate.")
    batch_size: int | None = Field(
        default=None, gt=0, le=4096, description="Per-device batch size."
    )
    gradient_accumulation_steps: int | None = Field(
        default=None, gt=0, le=4096, description="Micro-batches per optimizer step."
    )
    optim: str | None = Field(
        default=None, min_length=1, description="Optimizer name (HF naming, e.g. `adamw_8bit`)."
    )
    lr_scheduler_type: str | None = Field(
        default=None, min_length=1, description="LR schedule (HF naming, e.g. `linear`, `cosine`)."
    )
    weight_decay: float | None = Field(default=None, ge=0, lt=1, description="AdamW weight decay.")
    warmup_steps: StepConfig | None = Field(default=None, description="LR warm-up: steps or ratio.")
    logging_steps: StepConfig | None = Field(
        default=None, description="Cadence of `training.log` events."
    )
    save_steps: StepConfig | None = Field(
        default=None, description="Cadence of committed checkpoints."
    )
    eval_steps: StepConfig | None = Field(
        default=None, description="Cadence of evaluation; needs `dataset_split.enabled`."
    )
    train_on_responses_only: bool | None = Field(
        default=None, description="Compute the loss on assistant turns only (chat format)."
    )
    dataset_format: DatasetFormat | None = Field(
        default=None, description="Row format; default chat `messages`."
    )
    dataset_split: DatasetSplit | None = Field(default=None, description="Eval hold-out settings.")
    seed: int = Field(default=42, ge=0, le=MAX_SEED, description="Training seed (0..2**32-1).")
    dry_run: bool = Field(
        default=False, description="Smoke test: the whole pipeline on at most 50 rows and 10 steps."
    )
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description=(
            "Stop once `metric` has not improved for `patience` evaluations: a checkpoint is "
            "committed at that step, the run ends completed, `metrics` names the reason and the "
            "best step (the committed checkpoint with the lowest eval loss)."
        ),
    )
    init_adapter: AdapterRef | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "init_adapter", "initAdapter", "from_checkpoint", "fromCheckpoint"
        ),
        description=(
            "Start from this adapter's weights instead of a fresh LoRA: another run's committed "
            "checkpoint or final adapter. Its manifest must name the same base model."
        ),
    )
    resume: ResumePolicy = Field(
        default="auto",
        description=(
            "`auto`: resume from the newest committed checkpoint of this run when config and "
            "dataset match, refuse otherwise; `never`: start fresh; `force`: resume even across "
            "a changed config or dataset."
        ),
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("model")
    @classmethod
    def _model_fits_a_path(cls, value: str) -> str:
        # The model names a cache folder, a path or a key: a part over a file name's limit
        # fails in the pod ("File name too long"), a control character anywhere downstream.
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        if any(len(part.encode()) > 255 for part in value.split("/")):
            raise ValueError(
                "each '/'-separated part must be at most 255 bytes (a file name's limit)"
            )
        return value

    @field_validator("logging_steps", "save_steps", "eval_steps")
    @classmethod
    def _nonzero_cadence(cls, value: StepConfig | None) -> StepConfig | None:
        # Hugging Face refuses a cadence of 0 ("requires non-zero --logging_steps"); warm-up
        # of 0 steps is its default and stays allowed.
        if value is not None and not (value.steps or value.ratio):
            raise ValueError("must be at least 1 step (or a ratio above 0)")
        return value

    @model_validator(mode="after")
    def _early_stopping_needs_eval(self) -> TrainerConfig:
        if self.early_stopping and not (self.dataset_split and self.dataset_split.enabled):
            raise ValueError(
                "early_stopping follows the eval loss: it needs an eval split "
                "(dataset_split.enabled: true)"
            )
        return self

    @model_validator(mode="after")
    def _eval_schedules_need_eval(self) -> TrainerConfig:
        # Hugging Face: these schedules follow the eval loss ("requires an eval strategy").
        if self.lr_scheduler_type in ("reduce_lr_on_plateau", "greedy") and not (
            self.dataset_split and self.dataset_split.enabled
        ):
            raise ValueError(
                f"lr_scheduler_type {self.lr_scheduler_type} needs an eval split "
                "(dataset_split.enabled: true)"
            )
        return self

    @field_validator("optim")
    @classmethod
    def _known_optimizer(cls, value: str | None) -> str | None:
        if value is not None and value not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer; one of {', '.join(OPTIMIZERS)}")
        return value

    @field_validator("lr_scheduler_type")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        if value is not None and value not in LR_SCHEDULERS:
            raise ValueError(f"unknown schedule; one of {', '.join(LR_SCHEDULERS)}")
        return value

    # -- wire format -------------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        """The config as JSON-ready camelCase data, with secrets removed (not masked)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(self.dataset, BlobDataset):
            data["dataset"].pop("token", None)
            data["dataset"].pop("signedUrl", None)
        return data

    def secret_env(self) -> dict[str, str]:
        """Secret values the run needs, as environment variables (for a Secret or a child env)."""
        out: dict[str, str] = {}
        if isinstance(self.dataset, BlobDataset):
            if self.dataset.token is not None:
                out[DATASET_TOKEN_ENV] = self.dataset.token.get_secret_value()
            if self.dataset.signed_url is not None:
                out[DATASET_URL_ENV] = self.dataset.signed_url.get_secret_value()
        return out

    @classmethod
    def from_wire(
        cls, data: Mapping[str, Any], env: Mapping[str, str] | None = None
    ) -> TrainerConfig:
        """Re-validate a config received by the worker, putting secrets back from ``env``."""
        payload = json.loads(json.dumps(dict(data)))
        env = env or {}
        dataset = payload.get("dataset")
        if isinstance(dataset, dict) and dataset.get("type") == "blob":
            if env.get(DATASET_TOKEN_ENV):
                dataset["token"] = env[DATASET_TOKEN_ENV]
            if env.get(DATASET_URL_ENV):
                dataset["url"] = env[DATASET_URL_ENV]
        return validate_config(payload)

    def config_hash(self) -> str:
        """sha256 of the fields that change what is trained (not name, resume policy or secrets)."""
        data = self.to_wire()
        for key in ("name", "resume"):
            data.pop(key, None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _loc_to_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif (
            item in ("huggingface", "blob", "s3", "file")
            and parts
            and parts[-1].endswith("dataset")
        ):
            continue  # discriminated-union tag, not a field the user wrote
        elif item.startswith("function-") or item in ("int", "float", "str", "bool"):
            continue
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def validate_config(data: Mapping[str, Any] | TrainerConfig) -> TrainerConfig:
    """Validate a raw config (snake_case or Arkor camelCase).

    Args:
        data: the config as a mapping, or an already validated config.

    Returns:
        The validated, immutable config.

    Raises:
        ConfigError: listing every bad field path and what is wrong with it.
    """
    if isinstance(data, TrainerConfig):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError([("", f"expected a mapping of fields, got {type(data).__name__}")])
    try:
        return TrainerConfig.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see `arkor-ops schema`)"
            problems.append((_loc_to_path(tuple(err["loc"])), msg))
        raise ConfigError(problems) from None


def config_json_schema() -> dict[str, Any]:
    """JSON Schema of the trainer config (what `arkor-ops schema` prints)."""
    return TrainerConfig.model_json_schema(by_alias=False)
