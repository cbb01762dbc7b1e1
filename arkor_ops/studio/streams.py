"""The studio's two streams: a run's events relayed as SSE, and a playground answer.

``GET /api/runs/{job_id}/events`` follows the backend's stream (:func:`arkor_ops.follow.follow`,
reconnecting as ``arkor-ops logs -f`` does, resuming from the browser's ``Last-Event-ID``) and
writes each frame on, ``end`` included, so a page drawn from it has the run's whole history. A
stream that cannot be followed ends with ``event: studio.error`` (``{"error"}``) instead.

``POST /api/runs/{job_id}/checkpoints/{step}/chat`` takes ``{messages, maxTokens?,
temperature?}``, asks the backend's ``infer()`` for a streamed answer and writes OpenAI's
``data: {chunk}`` lines, ending with ``data: [DONE]``. A refusal before the first piece is a
JSON error with the status and ``code`` of the backend's (``run_ended`` 410,
``checkpoint_not_held`` 409); one after it is an ``event: studio.error`` frame.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from arkor_ops.errors import (
    ArkorOpsError,
    CheckpointUnavailableError,
    InferRequestError,
)
from arkor_ops.events import encode_frame
from arkor_ops.follow import follow
from arkor_ops.inference import RUN_ENDED, InferRequest, infer_request
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.studio.api import backend_of, error, failure

#: Reconnect 1 s after any close or retryable failure, as ``arkor-ops logs -f`` does.
RELAY_POLICY = ReconnectPolicy(base_delay_seconds=1.0, max_delay_seconds=1.0, jitter=0.0)
#: The playground's fields that reach ``infer()`` (the answer is always streamed).
CHAT_FIELDS = ("messages", "maxTokens", "max_tokens", "temperature")
SSE_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}


async def relay(request: Request) -> StreamingResponse:
    """``GET /api/runs/{job_id}/events``."""
    job_id = request.path_params["job_id"]
    after = request.headers.get("last-event-id")
    return StreamingResponse(
        _relayed(request, job_id, after), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _relayed(request: Request, job_id: str, after: str | None) -> AsyncIterator[bytes]:
    backend = backend_of(request)
    frames = follow(
        lambda last: backend.events(job_id, last),
        after=after,
        policy=RELAY_POLICY,
        name=f"the event stream of {job_id}",
    )
    try:
        async with contextlib.aclosing(frames):
            async for frame in frames:
                yield encode_frame(frame.event, frame.data, frame.id)
    except ArkorOpsError as exc:
        yield encode_frame("studio.error", json.dumps({"error": str(exc)}))


async def chat(request: Request) -> Response:
    """``POST /api/runs/{job_id}/checkpoints/{step}/chat``."""
    job_id, raw_step = request.path_params["job_id"], request.path_params["step"]
    if not raw_step.isdigit():
        return error(404, f"checkpoint step must be an integer, got {raw_step[:20]!r}")
    infer = await _chat_request(request)
    if isinstance(infer, Response):
        return infer
    answer = backend_of(request).infer(job_id, int(raw_step), infer).__aiter__()
    try:
        first = await anext(answer)
    except StopAsyncIteration:
        return error(502, f"the worker of {job_id} sent an empty answer")
    except CheckpointUnavailableError as exc:
        return error(410 if exc.reason == RUN_ENDED else 409, str(exc), exc.reason)
    except ArkorOpsError as exc:
        return failure(exc)
    return StreamingResponse(_chunks(first, answer), media_type="text/event-stream")


async def _chat_request(request: Request) -> InferRequest | Response:
    """The playground's body as a streamed :class:`InferRequest`, or the 400 response."""
    try:
        body = await request.json()
    except ValueError:
        return error(400, "the body is not JSON")
    fields = {k: v for k, v in (body if isinstance(body, dict) else {}).items() if k in CHAT_FIELDS}
    try:
        return infer_request({**fields, "stream": True})
    except InferRequestError as exc:
        return error(400, str(exc), "invalid_request")


async def _chunks(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[bytes]:
    yield _data(first)
    try:
        async for chunk in rest:
            yield _data(chunk)
    except ArkorOpsError as exc:
        yield encode_frame("studio.error", json.dumps({"error": str(exc)}))
        return
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # type: ignore[attr-defined]
    yield b"data: [DONE]\n\n"


def _data(chunk: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode()
