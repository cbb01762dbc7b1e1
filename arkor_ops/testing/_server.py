"""The fake backend's HTTP server: an ASGI app served by uvicorn on loopback, in its own thread.

The sidecar's own server stack (Starlette on uvicorn), so the fake speaks HTTP/1.1 and chunked
SSE exactly as a real server does. A stream that should break off mid-body raises
:class:`DropConnection`: uvicorn then closes the connection without the last chunk, which a
client reads as a network error (the log record uvicorn writes for it is filtered out).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

try:
    import uvicorn
except ImportError as exc:  # pragma: no cover - the dev and sidecar extras have it
    raise ImportError(
        "arkor_ops.testing serves over Starlette and uvicorn: pip install 'arkor-ops[sidecar]'"
    ) from exc


class DropConnection(Exception):  # noqa: N818 - names what the server does with it
    """Raised in a response body: the connection is cut without the end of the body."""


class _QuietDrops(logging.Filter):
    """Leaves out uvicorn's "Exception in ASGI application" for a deliberate drop."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, DropConnection)


_UVICORN_LOG = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _QuietDrops) for f in _UVICORN_LOG.filters):
    _UVICORN_LOG.addFilter(_QuietDrops())


class _Server(uvicorn.Server):  # type: ignore[misc]
    """uvicorn that says when it listens and stops on an event instead of polling a flag."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()
        self.stopping = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()

    async def main_loop(self) -> None:
        await self.stopping.wait()


class ServerThread:
    """Serve ``app`` on ``127.0.0.1`` (a free port) from a thread with its own event loop."""

    def __init__(self, app: Any, *, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._socket = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(
            app,
            http="h11",
            lifespan="off",
            log_config=None,  # a library configures no logging
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._server.listening.wait()
        if not self._server.started:
            self._thread.join(timeout=5)
            raise RuntimeError("the fake backend's server did not start")

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def stop(self, before: Callable[[], Awaitable[None]]) -> None:
        """Await ``before()`` on the server's loop (to end open streams), then stop serving."""
        if self.loop.is_closed() or not self._thread.is_alive():
            return

        async def shutdown() -> None:
            try:
                await before()
            finally:
                self._server.stopping.set()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        finally:
            self._server.listening.set()  # a server that failed to start: unblock __init__
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            self._socket.close()
