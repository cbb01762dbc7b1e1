"""What ``start()``/``wait()`` return and what each lifecycle callback receives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, TypedDict, overload

from arkor_ops.backends.base import TrainingJob
from arkor_ops.chat import AsyncChatStream, ChatStream, CheckpointChat, collect_args
from arkor_ops.errors import InferenceError
from arkor_ops.events import Artifact, Metrics, Phase
from arkor_ops.inference import ChatCompletion


@dataclass(frozen=True)
class StartResult:
    """What ``start()`` returns."""

    job_id: str


@dataclass(frozen=True)
class TrainingResult:
    """What ``wait()`` returns: the final job snapshot and what the run produced.

    Check ``job.status``: a failed run returns normally with ``status == "failed"``.
    """

    job: TrainingJob
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: Metrics | None = None


@dataclass(frozen=True)
class StartedContext:
    """``on_started``: training began (``job.status`` is already ``running``)."""

    job: TrainingJob


@dataclass(frozen=True)
class ResumedContext:
    """``on_resumed``: a later attempt took over the run (a replacement pod after a loss, a
    disruption or a retried failure); ``on_started`` is not called again.

    ``step`` is the committed checkpoint it resumes from (0: from the start); ``on_log`` steps
    above it are re-done and replace the earlier values for those steps.
    """

    job: TrainingJob
    step: int
    reason: str
    attempt: int


@dataclass(frozen=True)
class LogContext:
    """``on_log``: step metrics; missing metrics are ``None``."""

    job: TrainingJob
    step: int
    loss: float | None = None
    eval_loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    samples_per_second: float | None = None


@dataclass(frozen=True)
class CheckpointContext:
    """``on_checkpoint``: a checkpoint was committed.

    ``adapter`` is ``{"kind": "checkpoint", "jobId": ..., "step": ...}``, bound to this checkpoint.
    :meth:`infer` (blocking) and :meth:`ainfer` (async) ask this checkpoint a question.
    """

    job: TrainingJob
    step: int
    artifacts: list[Artifact]
    adapter: dict[str, Any]
    _chat: CheckpointChat | None = field(default=None, repr=False, compare=False)

    def _bound(self) -> CheckpointChat:
        if self._chat is None:
            raise InferenceError(
                f"this context of run {self.job.id} step {self.step} has no backend to ask; "
                "infer() works on the contexts a trainer's on_checkpoint receives"
            )
        return self._chat

    @overload
    def infer(
        self,
        args: Mapping[str, Any] | None = ...,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stream: Literal[True] | None = ...,
        response_format: Mapping[str, Any] | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        **camel_case: Any,
    ) -> ChatStream: ...

    @overload
    def infer(
        self,
        args: Mapping[str, Any] | None = ...,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stream: Literal[False],
        response_format: Mapping[str, Any] | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        **camel_case: Any,
    ) -> ChatCompletion: ...

    def infer(
        self,
        args: Mapping[str, Any] | None = None,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stream: bool | None = None,
        response_format: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **camel_case: Any,
    ) -> ChatCompletion | ChatStream:
        """Ask this checkpoint (Arkor's ``infer``); blocks. See :meth:`ainfer` for the arguments.

        Works inside any callback, sync or async (the request runs on a thread of its own).
        """
        explicit = {
            "messages": messages,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stream": stream,
            "response_format": response_format,
            "tools": tools,
            "tool_choice": tool_choice,
            **camel_case,
        }
        return self._bound().infer(collect_args(args, explicit))

    @overload
    async def ainfer(
        self,
        args: Mapping[str, Any] | None = ...,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stream: Literal[True] | None = ...,
        response_format: Mapping[str, Any] | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        **camel_case: Any,
    ) -> AsyncChatStream: ...

    @overload
    async def ainfer(
        self,
        args: Mapping[str, Any] | None = ...,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        max_tokens: int | None = ...,
        stream: Literal[False],
        response_format: Mapping[str, Any] | None = ...,
        tools: Sequence[Mapping[str, Any]] | None = ...,
        tool_choice: str | Mapping[str, Any] | None = ...,
        **camel_case: Any,
    ) -> ChatCompletion: ...

    async def ainfer(
        self,
        args: Mapping[str, Any] | None = None,
        /,
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        stream: bool | None = None,
        response_format: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        **camel_case: Any,
    ) -> ChatCompletion | AsyncChatStream:
        """Ask this checkpoint (Arkor's ``infer``), answered by the worker that holds the model,
        with this checkpoint's weights, between two optimizer steps (training pauses for it;
        ``usage.training_pause_seconds`` says how long).

        Args:
            args: Arkor's ``InferArgs`` as one mapping (camelCase or snake_case), or use the
                keywords; a field given both ways is an error.
            messages: OpenAI chat messages (``system``, ``user``, ``assistant``, ``tool``).
            temperature: 0 (greedy) to 2; default 1.
            top_p: nucleus sampling mass; default 1.
            max_tokens: most tokens to generate (``maxTokens``); default 256.
            stream: True (default): chunks as they come; False: one :class:`ChatCompletion`.
            response_format: ``{"type": "text"}``, ``{"type": "json_object"}`` or
                ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``
                (``responseFormat``); JSON is enforced while decoding, not checked afterwards.
            tools: ``[{"type": "function", "function": {"name", "parameters"}}]``.
            tool_choice: ``auto`` / ``none`` (free text), ``required`` or
                ``{"type": "function", "function": {"name"}}`` (a tool call, decoded to match
                its parameters) (``toolChoice``).
            **camel_case: the camelCase spellings (``maxTokens``, ``topP``, ``responseFormat``,
                ``toolChoice``).

        Returns:
            An :class:`~arkor_ops.chat.AsyncChatStream` of chunks ending at ``[DONE]``, or with
            ``stream=False`` a :class:`~arkor_ops.inference.ChatCompletion` whose
            ``choices[0].message.content`` is the text.

        Raises:
            InferRequestError: a bad argument (named, e.g. ``response_format.type``).
            CheckpointUnavailableError: the run ended, or the worker no longer holds this
                checkpoint (it keeps the newest few).
            InferenceError: the sidecar or worker could not answer.
        """
        explicit = {
            "messages": messages,
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stream": stream,
            "response_format": response_format,
            "tools": tools,
            "tool_choice": tool_choice,
            **camel_case,
        }
        return await self._bound().ainfer(collect_args(args, explicit))


@dataclass(frozen=True)
class CompletedContext:
    """``on_completed``: the run finished (``job.status`` is ``completed``)."""

    job: TrainingJob
    artifacts: list[Artifact]
    metrics: Metrics | None = None


@dataclass(frozen=True)
class FailedContext:
    """``on_failed``: the run failed; ``step`` is None when training never began."""

    job: TrainingJob
    error: str
    step: int | None = None


@dataclass(frozen=True)
class CancelledContext:
    """``on_cancelled``: the run stopped because it was asked to."""

    job: TrainingJob
    step: int | None = None
    checkpoint: Artifact | None = None


@dataclass(frozen=True)
class PhaseContext:
    """``on_phase``: the backend explains why the run is not training (yet).

    ``phase`` is one of :data:`~arkor_ops.events.Phase`, or a newer server's phase as a str.
    """

    job: TrainingJob
    phase: Phase | str
    reason: str | None = None
    message: str | None = None
    hint: str | None = None


#: What a callback returns: nothing, or an awaitable that ``wait()`` awaits before reading on.
CallbackResult: TypeAlias = Awaitable[None] | None

OnStarted: TypeAlias = Callable[[StartedContext], CallbackResult]
OnLog: TypeAlias = Callable[[LogContext], CallbackResult]
OnCheckpoint: TypeAlias = Callable[[CheckpointContext], CallbackResult]
OnCompleted: TypeAlias = Callable[[CompletedContext], CallbackResult]
OnFailed: TypeAlias = Callable[[FailedContext], CallbackResult]
OnCancelled: TypeAlias = Callable[[CancelledContext], CallbackResult]
OnPhase: TypeAlias = Callable[[PhaseContext], CallbackResult]
OnResumed: TypeAlias = Callable[[ResumedContext], CallbackResult]

#: Any one of the callbacks above (a mapping of callbacks by name holds these).
Callback: TypeAlias = (
    OnStarted | OnLog | OnCheckpoint | OnCompleted | OnFailed | OnCancelled | OnPhase | OnResumed
)


class Observers(TypedDict, total=False):
    """The callbacks ``observing()`` takes, by name (each optional)."""

    on_started: OnStarted
    on_log: OnLog
    on_checkpoint: OnCheckpoint
    on_completed: OnCompleted
    on_failed: OnFailed
    on_cancelled: OnCancelled
    on_phase: OnPhase
    on_resumed: OnResumed


#: Callback names, snake_case → Arkor's camelCase.
CALLBACK_NAMES: dict[str, str] = {
    "on_started": "onStarted",
    "on_log": "onLog",
    "on_checkpoint": "onCheckpoint",
    "on_completed": "onCompleted",
    "on_failed": "onFailed",
    "on_cancelled": "onCancelled",
    "on_phase": "onPhase",
    "on_resumed": "onResumed",
}
CAMEL_TO_SNAKE = {camel: snake for snake, camel in CALLBACK_NAMES.items()}
