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

Errors are JSON ``{"error": "..."}``: 404 for another job id or an unknown path, 400 for a
``Last-Event-ID`` that is not an integer.

There is no write route: a cancel reaches the trainer as an annotation on its pod (read through
a ``downwardAPI`` file), which only principals allowed to patch pods can set. The routes are
read-only and unauthenticated; the NetworkPolicy in ``k8s/base`` limits who may connect
(see docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from arkor_ops.events import END, PING
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

    def _run_gone(self) -> bool:
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
            if self._run_gone():
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
            chunks.append(_sse(event.type, event.data, event.id).encode())
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
