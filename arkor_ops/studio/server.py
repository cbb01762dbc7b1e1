"""Serving the studio: a socket bound to 127.0.0.1 (never another interface), uvicorn on it.

The socket is bound before uvicorn starts, so ``port=0`` gets a free port and the URL printed
is the one that answers. uvicorn's access log is off: the first request's URL carries the
session token, and logs are no place for it.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import Any

from arkor_ops.backends.base import Backend

HOST = "127.0.0.1"


def new_token() -> str:
    """A fresh session token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def bind(port: int) -> socket.socket:
    """A listening TCP socket on ``127.0.0.1:port`` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket, token: str) -> str:
    """The URL that opens the studio on ``sock`` and logs in with ``token``."""
    port = sock.getsockname()[1]
    return f"http://{HOST}:{port}/?token={token}"


def uvicorn_server(backend: Backend, token: str) -> Any:
    """The uvicorn server of the studio app (``await it.serve(sockets=[sock])``; setting its
    ``should_exit`` stops it)."""
    import uvicorn

    from arkor_ops.studio.app import create_app

    config = uvicorn.Config(
        create_app(backend, token),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


async def serve(
    backend: Backend,
    sock: socket.socket,
    token: str,
    *,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the studio over ``backend`` on ``sock`` until interrupted (SIGINT/SIGTERM);
    ``on_ready`` runs once the socket accepts connections (they queue until uvicorn reads)."""
    server = uvicorn_server(backend, token)
    if on_ready is not None:
        on_ready()
    await server.serve(sockets=[sock])
