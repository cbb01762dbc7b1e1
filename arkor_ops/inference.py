"""``infer()``'s request and answers: Arkor's ``InferArgs`` and OpenAI's chat completion shapes.

:class:`InferRequest` is what ``ctx.infer(...)`` takes (snake_case or Arkor's camelCase), checked
on the client before anything is sent; the worker re-validates the same model from the JSON the
sidecar hands it. The answers are OpenAI's: a :class:`ChatCompletion` (``stream=False``) or
:class:`ChatCompletionChunk` frames (``stream=True``, on the wire ``data: {...}`` lines ending
with ``data: [DONE]``). Both carry :class:`Usage`, which adds ``training_pause_seconds``: how
long training stood still while the worker answered.

Between the sidecar and the worker the answer travels as JSON lines (see :func:`worker_line`):
``{"chunk": {...}}`` per piece of text, then ``{"done": true}``, or ``{"error": ..., "status":
..., "code": ...}``; the sidecar turns them into SSE or into one completion
(:func:`completion_from_chunks`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from arkor_ops.errors import InferRequestError

#: The shared folder's socket the worker answers on (beside the event log).
SOCKET_NAME = "infer.sock"
#: How many committed checkpoints the worker keeps ready to answer for (LoRA weights in RAM).
HELD_CHECKPOINTS = 3
#: Error codes of a refused answer (``code`` in the JSON error body).
NOT_HELD = "checkpoint_not_held"
RUN_ENDED = "run_ended"

#: The top level speaks Arkor's camelCase; what it nests keeps OpenAI's keys (``json_schema``).
_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
_STRICT = ConfigDict(populate_by_name=True, extra="forbid")


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema the answer must match."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64, description="The schema's name.")
    description: str | None = Field(default=None, description="What the schema describes.")
    schema_: dict[str, Any] = Field(
        alias="schema", description="A JSON Schema (an object); the answer is decoded to match it."
    )
    strict: bool | None = Field(
        default=None,
        description="Strict: every object has `additionalProperties: false` and lists all its "
        "properties in `required` (checked here, as Arkor's backend does).",
    )

    @model_validator(mode="after")
    def _strict_schema(self) -> JsonSchemaFormat:
        if self.strict:
            _check_strict(self.schema_, "schema")
        return self


def _check_strict(node: Any, path: str) -> None:
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_strict(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            raise ValueError(f"strict: {path} needs additionalProperties: false")
        missing = sorted(set(node.get("properties", {})) - set(node.get("required", [])))
        if missing:
            raise ValueError(f"strict: {path} must list every property in required: {missing}")
    for key, value in node.items():
        if isinstance(value, dict | list):
            _check_strict(value, f"{path}.{key}")


class ResponseFormat(BaseModel):
    """``response_format``: ``text``, ``json_object`` (any JSON object) or ``json_schema``."""

    model_config = _STRICT

    type: Literal["text", "json_object", "json_schema"] = Field(
        description="`text` (free text), `json_object` or `json_schema` (constrained decoding)."
    )
    json_schema: JsonSchemaFormat | None = Field(
        default=None, description="The schema; required with `type: json_schema`."
    )

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema, strict?}")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"json_schema is only for type json_schema, not {self.type}")
        return self


class FunctionDef(BaseModel):
    """A tool's function: name, description, JSON Schema of its arguments."""

    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64, description="The function's name.")
    description: str | None = Field(default=None, description="What it does.")
    parameters: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of its arguments (an object)."
    )
    strict: bool | None = Field(default=None, description="Arkor's flag; passed through.")


class Tool(BaseModel):
    """One tool the model may call (``{"type": "function", "function": {...}}``)."""

    model_config = _STRICT

    type: Literal["function"] = Field(description="Always `function`.")
    function: FunctionDef = Field(description="The function.")


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming one function."""

    model_config = _STRICT

    type: Literal["function"] = Field(description="Always `function`.")
    function: dict[str, str] = Field(description="`{name}` of the function to call.")


class ChatMessage(BaseModel):
    """One message, OpenAI's shape (snake_case sub-keys such as ``tool_call_id`` are kept)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str | None = Field(default=None, description="The text.")
    tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="An assistant's tool calls."
    )
    tool_call_id: str | None = Field(default=None, description="What a tool message answers.")

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError(f"a {self.role} message needs content (or tool_calls)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self


class InferRequest(BaseModel):
    """What ``ctx.infer()`` takes: Arkor's ``InferArgs`` (snake_case or camelCase)."""

    model_config = _CAMEL

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    temperature: float | None = Field(
        default=None, ge=0, le=2, description="Sampling temperature; 0 is greedy. Default 1."
    )
    top_p: float | None = Field(
        default=None, gt=0, le=1, description="Nucleus sampling mass. Default 1."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, le=8192, description="Most tokens to generate. Default 256."
    )
    stream: bool = Field(default=True, description="Chunks as they come (default) or one reply.")
    response_format: ResponseFormat | None = Field(
        default=None,
        description="`text`, `json_object` or `json_schema` (enforced while decoding).",
    )
    tools: list[Tool] | None = Field(default=None, description="Tools the model may call.")
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="`auto`/`none`: free text (the tools are shown to the model's template "
        "unless `none`); `required` or a named function: the answer is a tool call, decoded to "
        "match the function's parameters.",
    )

    @model_validator(mode="after")
    def _tools_consistent(self) -> InferRequest:
        forced = self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)
        if forced and not self.tools:
            raise ValueError("tool_choice requires tools")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            wanted = self.tool_choice.function.get("name")
            if wanted not in names:
                raise ValueError(f"tool_choice names {wanted!r}, which is not among tools")
        constrained = self.response_format is not None and self.response_format.type != "text"
        if forced and constrained:
            raise ValueError("give either a forced tool_choice or a JSON response_format, not both")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON body sent to the sidecar (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def infer_request(fields: Mapping[str, Any]) -> InferRequest:
    """Validate ``infer()``'s arguments.

    Raises:
        InferRequestError: naming each bad field (``response_format.type``, ``messages[0]``).
    """
    try:
        return InferRequest.model_validate(dict(fields))
    except ValidationError as exc:
        problems = [(_path(err["loc"]), err["msg"]) for err in exc.errors()]
        raise InferRequestError(problems) from None


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_check_strict()]",):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


# -- answers ---------------------------------------------------------------------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Loose):
    """Token counts, plus how long training paused for this answer."""

    prompt_tokens: int = Field(default=0, description="Tokens of the prompt.")
    completion_tokens: int = Field(default=0, description="Tokens generated.")
    total_tokens: int = Field(default=0, description="Both.")
    training_pause_seconds: float | None = Field(
        default=None, description="How long training stood still while the worker answered."
    )


class Delta(_Loose):
    """What one chunk adds."""

    role: str | None = Field(default=None, description="`assistant`, in the first chunk.")
    content: str | None = Field(default=None, description="The next piece of text.")
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="Tool calls.")


class ChunkChoice(_Loose):
    """A chunk's one choice."""

    index: int = Field(default=0, description="Always 0.")
    delta: Delta = Field(default_factory=Delta, description="What this chunk adds.")
    finish_reason: str | None = Field(
        default=None, description="`stop`, `length` or `tool_calls`, in the last chunk."
    )


class ChatCompletionChunk(_Loose):
    """One ``chat.completion.chunk`` frame of a streamed answer."""

    id: str = Field(default="", description="The answer's id (the same in every chunk).")
    object: str = Field(default="chat.completion.chunk", description="The object type.")
    created: int = Field(default=0, description="Unix time of the answer.")
    model: str = Field(default="", description="`{job_id}@step-{step}`.")
    choices: list[ChunkChoice] = Field(default_factory=list, description="One choice.")
    usage: Usage | None = Field(default=None, description="In the last chunk.")


class AssistantMessage(_Loose):
    """The answer's message."""

    role: str = Field(default="assistant", description="`assistant`.")
    content: str | None = Field(default=None, description="The text (JSON arrives as text).")
    tool_calls: list[dict[str, Any]] | None = Field(default=None, description="Tool calls.")


class Choice(_Loose):
    """A completion's one choice."""

    index: int = Field(default=0, description="Always 0.")
    message: AssistantMessage = Field(description="The answer.")
    finish_reason: str | None = Field(default=None, description="`stop`, `length`, `tool_calls`.")


class ChatCompletion(_Loose):
    """A whole answer (``stream=False``): ``choices[0].message.content`` is the text."""

    id: str = Field(default="", description="The answer's id.")
    object: str = Field(default="chat.completion", description="The object type.")
    created: int = Field(default=0, description="Unix time of the answer.")
    model: str = Field(default="", description="`{job_id}@step-{step}`.")
    choices: list[Choice] = Field(description="One choice.")
    usage: Usage | None = Field(default=None, description="Token counts and the training pause.")


def completion_from_chunks(chunks: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One ``chat.completion`` (as JSON) made of a stream's chunks."""
    first: Mapping[str, Any] = {}
    text: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    finish = None
    usage = None
    for chunk in chunks:
        first = first or chunk
        for choice in chunk.get("choices", []):
            delta = choice.get("delta", {})
            if delta.get("content"):
                text.append(delta["content"])
            tool_calls.extend(delta.get("tool_calls") or [])
            finish = choice.get("finish_reason") or finish
        usage = chunk.get("usage") or usage
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": first.get("id", ""),
        "object": "chat.completion",
        "created": first.get("created", 0),
        "model": first.get("model", ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def worker_line(**fields: Any) -> bytes:
    """One line of the worker's answer on the socket (see the module docstring)."""
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for ``path`` that fits ``AF_UNIX``'s 107 bytes: the path itself, or, when
    longer, the same file through an open descriptor of its folder (``/proc/self/fd/N/name``)."""
    if len(os.fsencode(path)) < 100:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
