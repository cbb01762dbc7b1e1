"""The run's events: typed models and their Server-Sent Events framing.

One typed, replayable stream, wire-compatible with Arkor. Each event is a JSON object with
``type``, ``jobId``, ``timestamp`` and camelCase fields; in the event log and on the wire it also
carries its integer ``id``. On the wire, an SSE frame is::

    id: 7
    event: training.log
    data: {"id":7,"type":"training.log","jobId":"run-1","timestamp":"...","step":3,"loss":1.2}

``event: ping`` keeps an idle connection alive; ``event: end`` follows a terminal event.
Clients dispatch on the JSON ``type``; browsers' ``EventSource`` listens on the SSE event name,
so both are always set.

``job.phase`` is mostly synthesised by backends (without an id) to explain a wait before the
trainer runs (queued, unschedulable, pulling the image, crash-looping). The trainer writes one
itself, phase ``retrying`` (with an id), when it fails in a way that the Job will retry: a
terminal event is final, so only the last attempt writes ``training.failed``. A training run's
CPU pre-flight (:mod:`arkor_ops.worker.preflight`) writes phase ``preflight`` (with an id) when
it starts, then ``preflight.passed`` (ours: rows, tokens, a preview of the templated rows) or
``training.failed``; the GPU run's log continues after them.

``training.resumed`` (ours, not Arkor's: Arkor clients skip it as an unknown type) is written
instead of a second ``training.started`` when a later attempt of the same run (a replacement pod)
takes over: the step it resumes from and why. Steps after it re-do the steps above that one.

An evaluation job (:mod:`arkor_ops.evaluation`) writes the same kind of log with its own types:
``evaluation.started``, ``evaluation.progress`` (samples done of total), then one terminal event,
``evaluation.completed`` (metrics and where the per-sample results are), ``evaluation.failed`` or
``evaluation.cancelled``. Terminal types of both stages are in :data:`TERMINAL_TYPES`, so the
sidecar ends either stream with ``end`` and every backend reads either job's status the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PING = "ping"
END = "end"

TERMINAL_TYPES = frozenset(
    {
        "training.completed",
        "training.failed",
        "training.cancelled",
        "evaluation.completed",
        "evaluation.failed",
        "evaluation.cancelled",
    }
)
#: The job status each terminal event ends a job in (training and evaluation alike).
TERMINAL_STATUS = {kind: kind.rsplit(".", 1)[1] for kind in TERMINAL_TYPES}
#: The events that say a job began its real work (what ``started_at`` is read from).
STARTED_TYPES = frozenset({"training.started", "evaluation.started"})


def utc_now() -> str:
    """The current time as an ISO-8601 UTC timestamp with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class Artifact(_Wire):
    """Something a run produced: a committed checkpoint, the final adapter, or the event log."""

    kind: Literal["checkpoint", "final", "events"] = Field(description="What the artifact is.")
    job_id: str = Field(description="The run that produced it.")
    uri: str = Field(description="Where it is: `s3://…` or `file://…` (a prefix for directories).")
    step: int | None = Field(default=None, description="Optimizer step, for checkpoints.")


class Metrics(_Wire):
    """Summary metrics of a completed run."""

    final_loss: float | None = Field(default=None, description="Last training loss logged.")
    total_steps: int | None = Field(default=None, description="Optimizer steps run in total.")
    total_time: float | None = Field(default=None, description="Wall time of training, seconds.")
    stopped_early: bool | None = Field(
        default=None, description="True when `early_stopping` ended the run before max steps."
    )
    stop_reason: str | None = Field(default=None, description="Why it stopped early.")
    best_step: int | None = Field(
        default=None, description="Step of the committed checkpoint with the lowest eval loss."
    )
    best_eval_loss: float | None = Field(default=None, description="Its eval loss.")
    gpu_idle: dict[str, float] | None = Field(
        default=None,
        description=(
            "Seconds the trainer held its GPU without training: `beforeFirstStep` (container "
            "start to the first optimizer step) split into `modelFetch`, `dataFetch`, "
            "`checkpointFetch`, `modelLoad`, `tokenize` and `other`; `afterLastStep` (to this "
            "event: final save and upload)."
        ),
    )


class _Event(_Wire):
    id: int | None = Field(default=None, description="Position in the run's event log (from 1).")
    job_id: str = Field(description="The run this event belongs to.")
    timestamp: str = Field(default_factory=utc_now, description="ISO-8601 UTC time of the event.")

    @property
    def terminal(self) -> bool:
        """Whether this event ends the run."""
        return getattr(self, "type", "") in TERMINAL_TYPES


class TrainingStarted(_Event):
    """The trainer has loaded data and model and is about to train."""

    type: Literal["training.started"] = "training.started"
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Model, dataset fingerprint, rows, resumed-from step, …"
    )


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class TrainingResumed(_Event):
    """A later attempt of the run took over (replacement pod); written instead of a second
    ``training.started``. ``training.log`` steps above ``step`` are re-done after it."""

    type: Literal["training.resumed"] = "training.resumed"
    step: int = Field(
        default=0, ge=0, description="Committed checkpoint step it resumes from (0: the start)."
    )
    reason: str = Field(description="Why the previous attempt ended, for a person.")
    attempt: int = Field(ge=1, description="This attempt's number (the first attempt is 1).")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="As in `training.started`, for this attempt."
    )


class TrainingLog(_Event):
    """Step metrics, once per logging step. Missing metrics are null, as in Arkor."""

    type: Literal["training.log"] = "training.log"
    step: int = Field(ge=0, description="Optimizer step.")
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    samples_per_second: float | None = None

    _finite = field_validator(
        "loss", "eval_loss", "learning_rate", "epoch", "samples_per_second", mode="after"
    )(_finite_or_none)


class CheckpointSaved(_Event):
    """A checkpoint was uploaded and committed (its manifest written last)."""

    type: Literal["checkpoint.saved"] = "checkpoint.saved"
    step: int = Field(ge=0, description="Optimizer step of the checkpoint.")
    artifacts: list[Artifact] = Field(default_factory=list, description="The committed checkpoint.")


class CheckpointSkipped(_Event):
    """A checkpoint was saved but never uploaded: uploads were behind training, so it gave way
    to the newer ones queued after it (ours, not Arkor's: Arkor clients skip it). Training did
    not wait; a resume uses the newest committed checkpoint, never this one."""

    type: Literal["checkpoint.skipped"] = "checkpoint.skipped"
    step: int = Field(ge=0, description="Optimizer step of the checkpoint that was not uploaded.")
    reason: str = Field(description="Why, for a person.")
    backlog: int = Field(ge=0, description="Newer checkpoints queued for upload behind it.")


class TrainingCompleted(_Event):
    """Training finished; the final adapter is in storage. Terminal."""

    type: Literal["training.completed"] = "training.completed"
    artifacts: list[Artifact] = Field(default_factory=list, description="Final adapter and more.")
    metrics: Metrics = Field(default_factory=Metrics, description="Summary metrics.")


class TrainingFailed(_Event):
    """The run failed. Terminal."""

    type: Literal["training.failed"] = "training.failed"
    error: str = Field(description="What went wrong, for a person; never contains secrets.")
    step: int | None = Field(
        default=None, description="Step reached; null when training never began."
    )


class TrainingCancelled(_Event):
    """The run stopped because it was asked to. Terminal."""

    type: Literal["training.cancelled"] = "training.cancelled"
    step: int | None = Field(default=None, description="Step reached when it stopped.")
    checkpoint: Artifact | None = Field(
        default=None, description="Checkpoint saved on the way out."
    )


class EvaluationStarted(_Event):
    """The evaluation job has loaded rows, model and adapter and begins to score."""

    type: Literal["evaluation.started"] = "evaluation.started"
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Model, adapter, dataset fingerprint, samples, metrics."
    )


class EvaluationProgress(_Event):
    """Samples scored so far."""

    type: Literal["evaluation.progress"] = "evaluation.progress"
    done: int = Field(ge=0, description="Samples scored.")
    total: int = Field(ge=0, description="Samples to score.")


class EvaluationCompleted(_Event):
    """Every sample is scored; metrics and per-sample results are committed. Terminal."""

    type: Literal["evaluation.completed"] = "evaluation.completed"
    metrics: dict[str, float | None] = Field(
        description="Each metric's mean over the samples it scored (null: none was scored)."
    )
    samples: int = Field(ge=0, description="Samples scored.")
    uri: str = Field(
        description="The committed results prefix: `samples.jsonl`, `metrics.json`, "
        "`manifest.json`."
    )

    _finite = field_validator("metrics", mode="after")(
        lambda value: {k: _finite_or_none(v) for k, v in value.items()}
    )


class EvaluationFailed(_Event):
    """The evaluation failed (a bad scorer, rows, model or adapter). Terminal."""

    type: Literal["evaluation.failed"] = "evaluation.failed"
    error: str = Field(description="What went wrong, for a person; never contains secrets.")


class EvaluationCancelled(_Event):
    """The evaluation stopped because it was asked to; nothing was committed. Terminal."""

    type: Literal["evaluation.cancelled"] = "evaluation.cancelled"
    done: int | None = Field(default=None, description="Samples scored when it stopped.")


#: The phases this version knows (a backend's diagnosis, or the worker's ``preflight`` and
#: ``retrying``).
Phase = Literal[
    "queued",
    "preflight",
    "pending",
    "create-failed",
    "unschedulable",
    "pulling",
    "image-pull-error",
    "config-error",
    "starting",
    "crash-loop",
    "oom-killed",
    "retrying",
    "running",
    "cancelling",
    "completed",
    "failed",
]


class JobPhase(_Event):
    """Why a run is not training yet (or any more). Never terminal.

    Synthesised by the backend (no id), or written by the trainer as ``retrying`` (with an id)
    when the Job will run another attempt after a retryable failure.
    """

    type: Literal["job.phase"] = "job.phase"
    # A phase this version does not know (from a newer server) still parses, as a plain str.
    phase: Phase | str = Field(
        description="Short state, e.g. `queued`, `unschedulable`, `pulling`, `running`."
    )
    reason: str | None = Field(
        default=None, description="Machine-readable reason, e.g. `Unschedulable`."
    )
    message: str | None = Field(default=None, description="What the cluster says.")
    hint: str | None = Field(default=None, description="What to do about it.")


class PreviewRow(_Wire):
    """One dataset row as the model will see it (the pre-flight's preview)."""

    row: int = Field(description="Row number in the dataset (1-based).")
    text: str = Field(description="The row rendered with the chat template (cut to 2,000 chars).")
    tokens: int = Field(description="Its token count.")
    trained_tokens: int | None = Field(
        default=None,
        description="Tokens the loss is computed on with `train_on_responses_only` (the "
        "assistant turns); None when every token is trained.",
    )


class PreflightPassed(_Event):
    """The CPU pre-flight checked the run before a GPU is held (ours; Arkor clients skip it).

    Written by the pre-flight Job (:mod:`arkor_ops.worker.preflight`) once the dataset's rows,
    the model's access and files and the chat template passed; the GPU Job starts after it.
    """

    type: Literal["preflight.passed"] = "preflight.passed"
    rows: int = Field(description="Rows that will train.")
    tokens: int = Field(description="Tokens in those rows, before truncation (for an ETA).")
    truncated_rows: int = Field(description="Rows longer than `max_length` (cut in training).")
    untrained_rows: int = Field(
        default=0,
        description="With `train_on_responses_only`: rows whose response starts after "
        "`max_length` (truncation leaves them nothing to train on).",
    )
    max_length: int = Field(description="The run's max sequence length.")
    model_bytes: int | None = Field(
        default=None, description="Size of the model's weight files, where storage lists it."
    )
    memory_estimate_gib: float | None = Field(
        default=None, description="Rough GPU memory the run needs (weights, adapter, activations)."
    )
    gpu_memory_gib: float | None = Field(
        default=None, description="Memory of the run's GPU type, where known."
    )
    preview: list[PreviewRow] = Field(default_factory=list, description="The first rows.")
    seconds: float = Field(description="How long the pre-flight took.")


Event = Annotated[
    TrainingStarted
    | TrainingResumed
    | TrainingLog
    | CheckpointSaved
    | CheckpointSkipped
    | TrainingCompleted
    | TrainingFailed
    | TrainingCancelled
    | EvaluationStarted
    | EvaluationProgress
    | EvaluationCompleted
    | EvaluationFailed
    | EvaluationCancelled
    | PreflightPassed
    | JobPhase,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

TerminalEvent = (
    TrainingCompleted
    | TrainingFailed
    | TrainingCancelled
    | EvaluationCompleted
    | EvaluationFailed
    | EvaluationCancelled
)


def event_to_dict(event: BaseModel) -> dict[str, Any]:
    """The event as camelCase JSON data (the shape of a log line and of an SSE ``data:``)."""
    return event.model_dump(mode="json", by_alias=True, exclude_none=False)


def event_to_json(event: BaseModel) -> str:
    """The event as one compact JSON line (no newline)."""
    return json.dumps(event_to_dict(event), separators=(",", ":"), ensure_ascii=False)


def parse_event(data: str | bytes | dict[str, Any]) -> Event | None:
    """Parse one event from JSON text or data.

    Returns None for malformed JSON and for unknown ``type`` values: as in Arkor, such frames are
    skipped, not errors.
    """
    try:
        payload = json.loads(data) if isinstance(data, str | bytes) else data
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    try:
        return _EVENT_ADAPTER.validate_python(payload)
    except ValidationError:
        return None


# --- SSE framing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One SSE frame as received: the ``event`` name, ``data`` text and ``id`` (if any).

    A plain dataclass, not a pydantic model: a busy run's stream makes one per event, and the
    fields are already strings.
    """

    event: str = "message"
    data: str = ""
    id: str | None = None

    @property
    def is_ping(self) -> bool:
        """A keepalive."""
        return self.event == PING

    @property
    def is_end(self) -> bool:
        """The server's clean end of stream."""
        return self.event == END

    @property
    def has_payload(self) -> bool:
        """Whether the data is a JSON object (an event, maybe of a type this client does not
        know): what counts as progress on a stream."""
        return self._decoded()[0]

    @property
    def parsed(self) -> Event | None:
        """The typed event in the data, or None (not an event, or of a type unknown here)."""
        return self._decoded()[1]

    def _decoded(self) -> tuple[bool, Event | None]:
        cache = self.__dict__  # not functools.cached_property: it takes a lock on every read
        if "_event" not in cache:
            cache["_event"] = decode_event(self.data)
        decoded: tuple[bool, Event | None] = cache["_event"]
        return decoded


def decode_event(data: str) -> tuple[bool, Event | None]:
    """Whether ``data`` is a JSON object, and the typed event in it (None when it is not one).

    One pass of pydantic-core's JSON parser (which reads ``NaN`` as Python's ``json`` does),
    not ``json.loads`` and then a validation: a stream decodes every event it receives.
    """
    try:
        return True, _EVENT_ADAPTER.validate_json(data)
    except ValidationError as exc:
        kind = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        return kind["type"] not in ("json_invalid", "dict_type"), None


def encode_frame(event: str, data: str = "", event_id: int | str | None = None) -> bytes:
    """Encode one SSE frame (for tests and fakes; the sidecar uses its SSE library)."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {event}")
    for line in data.split("\n") if data else [""]:
        lines.append(f"data: {line}")
    return ("\n".join(lines) + "\n\n").encode()


def encode_event(event: BaseModel) -> bytes:
    """Encode a typed event as an SSE frame with matching ``id``, ``event`` and ``data``."""
    payload = event_to_dict(event)
    return encode_frame(payload["type"], event_to_json(event), payload.get("id"))


def ping_frame() -> bytes:
    """An SSE keepalive frame."""
    return encode_frame(PING)


def end_frame() -> bytes:
    """The SSE frame that closes a finished stream."""
    return encode_frame(END)
