"""The studio's Starlette app: the page, its assets, the API, behind :class:`StudioAccess`.

Routes (all behind the token, see :mod:`.access`):

| route | what |
|---|---|
| ``GET /`` | the page (``static/index.html``); ``?token=`` logs in |
| ``GET /static/...`` | its script and styles |
| ``GET /api/runs``, ``GET /api/runs/{id}`` | runs as :func:`~.api.run_row` |
| ``GET /api/runs/{id}/checkpoints`` | committed checkpoints with their URIs |
| ``GET /api/runs/{id}/events`` | the run's events as SSE (:mod:`.streams`) |
| ``POST /api/runs/{id}/cancel`` | the backend's cancel |
| ``POST /api/runs/{id}/checkpoints/{step}/chat`` | a playground answer through ``infer()`` |

Every response forbids caching and framing, and its Content-Security-Policy admits only the
studio's own origin, so the page cannot load anything from the network even by mistake.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arkor_ops.backends.base import Backend
from arkor_ops.studio import api, streams
from arkor_ops.studio.access import StudioAccess

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


async def index(request: Request) -> FileResponse:
    """The page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(backend: Backend, token: str) -> Starlette:
    """The studio app over ``backend`` (which the caller opens and closes), admitting
    requests that carry ``token``."""
    routes = [
        Route("/", index),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/runs", api.runs),
        Route("/api/runs/{job_id}", api.run),
        Route("/api/runs/{job_id}/checkpoints", api.checkpoints),
        Route("/api/runs/{job_id}/events", streams.relay),
        Route("/api/runs/{job_id}/cancel", api.cancel, methods=["POST"]),
        Route("/api/runs/{job_id}/checkpoints/{step}/chat", streams.chat, methods=["POST"]),
    ]
    middleware = [Middleware(_SecurityHeaders), Middleware(StudioAccess, token=token)]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.backend = backend
    return app
