"""The sidecar's HTTP app: the run's event stream as SSE (sse-starlette) and a health check.

Routes:

- ``GET /v1/jobs/{job_id}/events/stream``: every event after ``Last-Event-ID`` (all of them
  without it) as ``id:``/``event:``/``data:`` frames, then new ones as the trainer writes them;
  ``event: ping`` while idle; ``event: end`` after the terminal event once the log is persisted
  to storage (at most 30 s later), then the stream closes: a client that saw ``end`` finds the
  whole log in storage.
  When the server stops, each stream first receives every event read so far, then closes
  without ``end`` (the client resumes elsewhere with ``Last-Event-ID``).
  At most ``ARKOR_SIDECAR_MAX_STREAMS`` streams at once: one more is answered 503 with
  ``Retry-After`` (the client's reconnect policy retries it), so no one can exhaust the sidecar.
- ``GET /healthz``: ``{"status": "ok", "jobId", "lastEventId", "terminal", "clients"}``.

- ``POST /v1/jobs/{job_id}/checkpoints/{step}/chat/completions``: ``ctx.infer()``. The body is
  :class:`~arkor_ops.inference.InferRequest` (camelCase); the answer is OpenAI's: SSE
  ``data: {chat.completion.chunk}`` frames ending with ``data: [DONE]`` (``stream``, the
  default), or one ``chat.completion``. The sidecar hands the request to the worker over a Unix
  socket beside the event log (``infer.sock`` in the shared ``emptyDir``: the two containers
  share that folder, not a port, and a socket needs no polling or clean-up of answer files); the
  worker answers between two optimizer steps with that checkpoint's weights. Refusals: 400 (bad
  body, field named), 404 (another job), 409 ``checkpoint_not_held`` (the worker keeps only the
  newest few), 410 ``run_ended`` (training is over), 429 (too many queued), 503 (the worker is
  not answering yet).

Errors are JSON ``{"error": "..."}`` (plus ``code`` for infer refusals): 404 for another job id
or an unknown path, 400 for a ``Last-Event-ID`` that is not an integer.

The one POST route changes no run state: it reads the model and pauses training while it
answers. A cancel reaches the trainer as an annotation on its pod (read through a
``downwardAPI`` file), which only principals allowed to patch pods can set. The routes are
unauthenticated; on Kubernetes a client reaches them through the API server's pod proxy, so
only principals allowed ``pods/proxy`` in the namespace can, and the NetworkPolicy in
``k8s/base`` limits who may connect directly (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arkor_ops.events import END, PING
from arkor_ops.inference import (
    RUN_ENDED,
    SOCKET_NAME,
    InferRequest,
    completion_from_chunks,
    socket_address,
)
from arkor_ops.settings import SidecarSettings
from arkor_ops.sidecar.tail import LogTail
from arkor_ops.storage import RunLayout, open_storage

log = logging.getLogger(__name__)


class Sidecar:
    """The state shared by every request: the settings and the one log reader."""

    def __init__(self, settings: SidecarSettings) -> None:
        self.settings = settings
        layout = RunLayout(settings.storage_uri, settings.job_id)
        storage = open_storage(settings.storage_uri)

        def persist(path: Path) -> None:
            storage.put_file(layout.events, path)

        self.events_uri = layout.events
        self.tail = LogTail(settings.event_log, poll_seconds=settings.poll_seconds, persist=persist)
        self._tasks: list[asyncio.Task[None]] = []
        self.clients = 0
        self.streams = 0  # admitted streams (counted from the request, not the first byte)

    async def start(self) -> None:
        """Start reading the log (and the linger timer, when configured)."""
        self._tasks.append(asyncio.create_task(self.tail.run(), name="tail"))
        if self.settings.sidecar_linger_seconds is not None:
            self._tasks.append(asyncio.create_task(self._linger(), name="linger"))

    def run_gone(self) -> bool:
        """Whether the worker being watched has exited, or the run's folder was removed."""
        if not self.settings.event_log.parent.exists():
            return True
        pid = self.settings.sidecar_worker_pid
        if pid is None:
            return False
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")

    async def _linger(self) -> None:
        while not self.tail.persisted_terminal.is_set():
            if self.run_gone():
                log.info("the worker is gone without a terminal event")
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tail.persisted_terminal.wait(), 0.5)
        assert self.settings.sidecar_linger_seconds is not None
        await asyncio.sleep(self.settings.sidecar_linger_seconds)
        log.info("run ended %.0f s ago: stopping", self.settings.sidecar_linger_seconds)
        os.kill(os.getpid(), signal.SIGTERM)  # the same graceful path as an external SIGTERM

    async def stop(self) -> None:
        """Persist what was read and let every stream drain and close."""
        await self.tail.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


def _sse(event: str, data: str, event_id: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(
        data, event=event, id=None if event_id is None else str(event_id), sep="\n"
    )


def _ping() -> ServerSentEvent:
    return _sse(PING, "")


async def stream_events(tail: LogTail, after: int) -> AsyncIterator[bytes]:
    """SSE bytes for every event after id ``after``: replay, then follow the log.

    Each client holds only its position in the file and one batch: events it is behind on are
    read from the file, the newest ones from the tail's memory. Ends after ``end`` once the
    terminal event is sent, or (without ``end``) once the tail is closed and everything it
    read has been sent.
    """
    pos = tail.position_after(after)
    sent = after
    while True:
        events, pos = tail.read(pos)
        chunks = []
        for event in events:
            if event.id <= sent:
                continue  # a resume point inside a batch, or a re-read after a replaced file
            sent = event.id
            chunks.append(event.frame)
            if event.terminal:
                yield b"".join(chunks)
                await tail.wait_persisted()  # `end` promises the log is in storage too
                yield _sse(END, "").encode()
                return
        if chunks:
            yield b"".join(chunks)
        if pos < tail.offset:
            if not chunks:
                await asyncio.sleep(0)  # skipping ids the client has: let the others run
            continue
        if tail.terminal.is_set():
            await tail.wait_persisted()
            yield _sse(END, "").encode()  # the client already has the terminal event
            return
        if tail.closed:
            return
        await tail.wait(pos)


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    body = {"error": message} if code is None else {"error": message, "code": code}
    return JSONResponse(body, status_code=status)


async def _infer_request(request: Request, job_id: str) -> tuple[int, InferRequest] | JSONResponse:
    """The step and the request of an infer POST, or the error response."""
    if request.path_params["job_id"] != job_id:
        return _error(
            404, f"job {request.path_params['job_id']!r} not found (this sidecar serves one run)"
        )
    raw_step = request.path_params["step"]
    if not raw_step.isdigit():
        return _error(404, f"checkpoint step must be an integer, got {raw_step[:20]!r}")
    try:
        body = await request.json()
        infer = InferRequest.model_validate(body)
    except ValueError as exc:  # not JSON, or a ValidationError
        detail = (
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                for e in exc.errors()
            )
            if isinstance(exc, ValidationError)
            else "the body is not JSON"
        )
        return _error(400, f"invalid infer request: {detail}", "invalid_request")
    return int(raw_step), infer


#: How long the worker may take to accept a request (it answers later, between steps).
ACCEPT_SECONDS = 30.0


async def _worker_answer(
    sidecar: Sidecar, step: int, wire: dict[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]] | JSONResponse:
    """Hand the request to the worker; its socket and the first line of its answer, or the
    error response when it refuses or is not there."""
    path = sidecar.settings.event_log.parent / SOCKET_NAME
    try:
        with socket_address(path) as address:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(address, limit=2**22), ACCEPT_SECONDS
            )
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError, OSError) as exc:
        if sidecar.tail.terminal.is_set() or sidecar.run_gone():
            return _error(410, "the run has ended; its worker no longer answers", RUN_ENDED)
        log.info("infer: the worker is not answering: %s", type(exc).__name__)
        return _error(503, "the worker is not answering infer() (yet)", "unavailable")
    writer.write(json.dumps({"step": step, "request": wire}).encode() + b"\n")
    await writer.drain()
    line = await reader.readline()  # the first piece: this waits for a step boundary
    first = _line(line)
    if "error" in first or "chunk" not in first:
        writer.close()
        message = str(first.get("error") or "the worker ended the answer without a reply")
        return _error(int(first.get("status") or 502), message, first.get("code"))
    return reader, writer, first


def _line(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {"error": "the worker closed the connection (it may have exited)", "status": 502}
    try:
        data = json.loads(raw)
    except ValueError:
        return {"error": "the worker sent a malformed line", "status": 502}
    return data if isinstance(data, dict) else {"error": "malformed line", "status": 502}


async def _chunks(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    """The worker's chunks, the first one included; raises on an error line."""
    try:
        line = first
        while True:
            if "chunk" in line:
                yield line["chunk"]
            elif line.get("done"):
                return
            else:
                raise RuntimeError(str(line.get("error") or "the worker's answer broke off"))
            line = _line(await reader.readline())
    finally:
        writer.close()


async def _sse_chunks(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
    except RuntimeError as exc:
        yield b"event: error\ndata: " + json.dumps({"error": str(exc)}).encode() + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


class _Admitted(EventSourceResponse):  # type: ignore[misc]
    """Holds one of the ``sidecar_max_streams`` slots from creation until the response ends
    (also when the client leaves before the first byte)."""

    def __init__(self, owner: Sidecar, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        owner.streams += 1

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.owner.streams -= 1


def create_app(sidecar: Sidecar) -> Starlette:
    """The Starlette app serving ``sidecar``'s run.

    Args:
        sidecar: the shared state; the app's lifespan starts and stops its log reader.

    Returns:
        The ASGI app.
    """
    settings = sidecar.settings

    async def stream(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if job_id != settings.job_id:
            return _error(404, f"job {job_id!r} not found (this sidecar serves one run)")
        raw = request.headers.get("last-event-id", "").strip()
        try:
            after = int(raw) if raw else 0
        except ValueError:
            return _error(400, f"Last-Event-ID must be an integer event id, got {raw[:40]!r}")
        if sidecar.streams >= settings.sidecar_max_streams:
            log.warning("refusing a stream: %d already open", sidecar.streams)
            return JSONResponse(
                {"error": f"too many streams ({settings.sidecar_max_streams}); retry later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        log.debug("client %s streams after id %d", request.client, after)
        return _Admitted(
            sidecar,
            _counted(stream_events(sidecar.tail, after)),
            ping=settings.ping_seconds,
            ping_message_factory=_ping,
            sep="\n",
            shutdown_grace_period=settings.shutdown_grace_seconds,
            send_timeout=30,
        )

    async def _counted(frames: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        sidecar.clients += 1
        try:
            async for chunk in frames:
                yield chunk
        finally:
            sidecar.clients -= 1

    async def chat_completions(request: Request) -> Response:
        parsed = await _infer_request(request, settings.job_id)
        if isinstance(parsed, JSONResponse):
            return parsed
        step, infer = parsed
        answer = await _worker_answer(sidecar, step, infer.to_wire())
        if isinstance(answer, JSONResponse):
            return answer
        chunks = _chunks(*answer)
        if infer.stream:
            return StreamingResponse(
                _sse_chunks(chunks),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            collected = [chunk async for chunk in chunks]
        except RuntimeError as exc:
            return _error(502, str(exc))
        return JSONResponse(completion_from_chunks(collected))

    async def healthz(request: Request) -> Response:
        tail = sidecar.tail
        return JSONResponse(
            {
                "status": "stopping" if tail.closed else "ok",
                "jobId": settings.job_id,
                "lastEventId": tail.last_id,
                "terminal": tail.terminal.is_set(),
                "clients": sidecar.clients,
            }
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await sidecar.start()
        try:
            yield {}
        finally:
            await sidecar.stop()

    return Starlette(
        routes=[
            Route("/v1/jobs/{job_id}/events/stream", stream, methods=["GET"]),
            Route(
                "/v1/jobs/{job_id}/checkpoints/{step}/chat/completions",
                chat_completions,
                methods=["POST"],
            ),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
