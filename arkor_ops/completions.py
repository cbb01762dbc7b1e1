"""One ``infer()`` request over HTTP: POST it, read the chunks to ``[DONE]`` or the one reply.

Shared by every backend that reaches a sidecar-shaped route (the local sidecar, the API
server's pod proxy, the fake backend):
``POST /v1/jobs/{job_id}/checkpoints/{step}/chat/completions``. Failures map to
:class:`~arkor_ops.errors.InferenceError`; a refusal whose JSON ``code`` says the checkpoint is
not held or the run ended maps to :class:`~arkor_ops.errors.CheckpointUnavailableError`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from arkor_ops.errors import CheckpointUnavailableError, InferenceError, StreamError
from arkor_ops.inference import NOT_HELD, RUN_ENDED
from arkor_ops.sse import open_frames

#: How long to wait for the next piece of an answer: it comes at the next step boundary, after
#: any answers queued before it.
READ_TIMEOUT_SECONDS = 600.0
DONE = "[DONE]"


def route(job_id: str, step: int) -> str:
    """The sidecar route (no leading slash) that answers for ``step`` of ``job_id``."""
    return f"v1/jobs/{job_id}/checkpoints/{step}/chat/completions"


def timeout() -> httpx.Timeout:
    """Connect in 10 s; each piece of the answer may take :data:`READ_TIMEOUT_SECONDS`."""
    return httpx.Timeout(10.0, read=READ_TIMEOUT_SECONDS)


def refusal(job_id: str, step: int, status: int, body: Any, url: str) -> InferenceError:
    """The error for a non-2xx answer whose JSON body is ``body``."""
    if isinstance(body, dict):
        code, text = body.get("code"), str(body.get("error") or f"HTTP {status}")
    else:
        code, text = None, (str(body).strip()[:300] or f"HTTP {status}")
    if code in (NOT_HELD, RUN_ENDED):
        return CheckpointUnavailableError(job_id, step, str(code), text, status=status)
    return InferenceError(f"infer() for run {job_id} step {step} ({url}): {text}", status=status)


async def post(
    client: httpx.AsyncClient,
    url: str,
    job_id: str,
    step: int,
    body: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """POST ``body`` to ``url``; yield each chunk (``stream``) or the one completion.

    A streamed answer ends at ``data: [DONE]``; one that ends without it raises.

    Raises:
        CheckpointUnavailableError: the worker no longer holds ``step`` or the run ended.
        InferenceError: any other refusal (with ``status``), or a broken connection.
    """
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    stream = bool(body.get("stream", True))
    if stream:
        hdrs["Accept"] = "text/event-stream"
    data = json.dumps(dict(body)).encode()
    try:
        if not stream:
            response = await client.post(url, content=data, headers=hdrs)
            if not response.is_success:
                raise refusal(job_id, step, response.status_code, _json(response), url)
            yield response.json()
            return
        async with client.stream("POST", url, content=data, headers=hdrs) as response:
            if not response.is_success:
                await response.aread()
                raise refusal(job_id, step, response.status_code, _json(response), url)
            async with contextlib.aclosing(open_frames(response)) as frames:
                async for frame in frames:
                    if frame.event == "error":
                        raise refusal(job_id, step, 500, _loads(frame.data), url)
                    if frame.event != "message" or not frame.data:
                        continue  # ping and other control frames
                    if frame.data.strip() == DONE:
                        return
                    chunk = _loads(frame.data)
                    if isinstance(chunk, dict):
                        yield chunk
        raise InferenceError(
            f"infer() for run {job_id} step {step}: the stream ended before [DONE]"
        )
    except StreamError as exc:  # not an event stream
        raise InferenceError(f"infer() for run {job_id} step {step}: {exc}") from exc
    except httpx.TransportError as exc:
        raise InferenceError(
            f"infer() for run {job_id} step {step} ({url}): {type(exc).__name__}: {exc}"
        ) from exc
    except ValueError as exc:  # a 2xx body that is not JSON
        raise InferenceError(f"infer() for run {job_id} step {step}: bad answer: {exc}") from exc


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return {"error": data[:300]}
