"""Read one SSE stream over HTTP (httpx + httpx-sse), mapping failures to :class:`StreamError`.

Shared by every backend that reaches an SSE endpoint (the sidecar, the fake backend, the API
server's pod proxy). It opens the stream once; the reconnect policy is the trainer's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import httpx
from httpx_sse import aconnect_sse

from arkor_ops.errors import StreamError
from arkor_ops.events import Frame


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    text = response.text.strip()
    return text[:300] if text else f"HTTP {response.status_code}"


async def stream_frames(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_event_id: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[Frame]:
    """Yield the frames of the SSE stream at ``url`` until the server closes it.

    Raises:
        StreamError: with the HTTP status when the response is not 200, or with
            ``status=None`` for connection and mid-stream errors.
    """
    hdrs = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **(headers or {})}
    if last_event_id:
        hdrs["Last-Event-ID"] = last_event_id
    try:
        async with aconnect_sse(client, "GET", url, headers=hdrs) as source:
            response = source.response
            if response.status_code != 200:
                await response.aread()
                raise StreamError(
                    f"event stream {url}: {_error_text(response)}", status=response.status_code
                )
            async with contextlib.aclosing(source.aiter_sse()) as events:
                async for sse in events:
                    yield Frame(event=sse.event or "message", data=sse.data, id=sse.id or None)
    except httpx.TransportError as exc:
        raise StreamError(f"event stream {url}: {type(exc).__name__}: {exc}") from exc
