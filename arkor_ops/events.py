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
terminal event is final, so only the last attempt writes ``training.failed``.

``training.resumed`` (ours, not Arkor's: Arkor clients skip it as an unknown type) is written
instead of a second ``training.started`` when a later attempt of the same run (a replacement pod)
takes over: the step it resumes from and why. Steps after it re-do the steps above that one.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PING = "ping"
END = "end"

TERMINAL_TYPES = frozenset({"training.completed", "training.failed", "training.cancelled"})


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


class JobPhase(_Event):
    """Why a run is not training yet (or any more). Never terminal.

    Synthesised by the backend (no id), or written by the trainer as ``retrying`` (with an id)
    when the Job will run another attempt after a retryable failure.
    """

    type: Literal["job.phase"] = "job.phase"
    phase: str = Field(
        description="Short state, e.g. `queued`, `unschedulable`, `pulling`, `running`."
    )
    reason: str | None = Field(
        default=None, description="Machine-readable reason, e.g. `Unschedulable`."
    )
    message: str | None = Field(default=None, description="What the cluster says.")
    hint: str | None = Field(default=None, description="What to do about it.")


Event = Annotated[
    TrainingStarted
    | TrainingResumed
    | TrainingLog
    | CheckpointSaved
    | TrainingCompleted
    | TrainingFailed
    | TrainingCancelled
    | JobPhase,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

TerminalEvent = TrainingCompleted | TrainingFailed | TrainingCancelled


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


class Frame(BaseModel):
    """One SSE frame as received: the ``event`` name, ``data`` text and ``id`` (if any)."""

    model_config = ConfigDict(frozen=True)

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
