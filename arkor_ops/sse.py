"""Read one SSE stream over HTTP (httpx), mapping failures to :class:`StreamError`.

Shared by every backend that reaches an SSE endpoint (the sidecar, the fake backend, the API
server's pod proxy) and by ``infer()``'s streamed answers. It opens the stream once; the
reconnect policy is the trainer's.

:class:`FrameDecoder` is our own, not httpx-sse's: that one decodes one line per call and
yields one event per ``await``, which capped a trainer following a busy run at about 20k
events/s while the sidecar sends 145k (``bench/events.py``). This one decodes each received
chunk at once (one UTF-8 decode, one split) and hands back all of its frames, so a burst costs
one pass. It follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; a leading BOM
is dropped; ``:`` starts a comment; a blank line dispatches the frame when it has data; the
last ``id`` carries over to later frames; an unfinished frame at the end is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import httpx

from arkor_ops.errors import StreamError
from arkor_ops.events import Frame

__all__ = ["FrameDecoder", "open_frames", "stream_frames"]


class FrameDecoder:
    """Bytes of an event stream in, :class:`Frame` objects out, chunk by chunk."""

    def __init__(self) -> None:
        self._rest = b""  # an unfinished line
        self._cr = False  # the last chunk ended in CR: a following LF belongs to it
        self._start = True  # a BOM may come first
        self._event = ""
        self._data: list[str] = []
        self._id = ""

    def feed(self, chunk: bytes) -> list[Frame]:
        """The frames completed by ``chunk``."""
        if self._cr and chunk[:1] == b"\n":  # the LF of a CRLF cut in two
            chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        cut = chunk.rfind(b"\n")
        if cut < 0:
            self._rest += chunk
            return []
        text = (self._rest + chunk[:cut]).decode("utf-8", errors="replace")
        self._rest = chunk[cut + 1 :]
        if self._start:
            self._start = False
            text = text.removeprefix("\ufeff")
        return self._lines(text.split("\n"))

    def _lines(self, lines: list[str]) -> list[Frame]:
        frames = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    event = self._event or "message"
                    frames.append(Frame(event, "\n".join(data), self._id or None))
                    data = self._data = []
                self._event = ""
                continue
            name, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id = value
            # "" (a comment), "retry" (the reconnect policy is the client's) and others: ignored
        return frames


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


async def open_frames(response: httpx.Response) -> AsyncGenerator[Frame, None]:
    """The frames of an open streaming ``response`` (its status already checked).

    Raises:
        StreamError: (``status=None``) when the body is not ``text/event-stream``.
    """
    kind = response.headers.get("content-type", "").partition(";")[0].strip()
    if kind != "text/event-stream":
        raise StreamError(f"{response.url}: expected an event stream, got {kind or 'no type'!r}")
    decoder = FrameDecoder()
    async for chunk in response.aiter_bytes():
        for frame in decoder.feed(chunk):
            yield frame


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
        async with client.stream("GET", url, headers=hdrs) as response:
            if response.status_code != 200:
                await response.aread()
                raise StreamError(
                    f"event stream {url}: {_error_text(response)}", status=response.status_code
                )
            async with contextlib.aclosing(open_frames(response)) as frames:
                async for frame in frames:
                    yield frame
    except httpx.TransportError as exc:
        raise StreamError(f"event stream {url}: {type(exc).__name__}: {exc}") from exc
