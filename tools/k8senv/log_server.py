"""The kubelet endpoint subset the API server uses for ``pods/log``: ``/containerLogs/...``.

Served over TLS on the nodes' ``InternalIP`` and ``daemonEndpoints`` port with a certificate
signed by the cluster CA (the API server verifies it with ``--kubelet-certificate-authority``) and
requires the API server's client certificate. ``follow=true`` streams until the container stops.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)


class LogSource:
    """Where a container's log is and whether more may come."""

    def __init__(self, path: Path, is_live: Callable[[], bool]) -> None:
        """Args: the log file and a callable telling whether the container may still write."""
        self.path = path
        self.is_live = is_live


Lookup = Callable[[str, str, str], LogSource | None]


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("kubelet endpoint: " + format, *args)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self.send_error(404, "only /containerLogs/{namespace}/{pod}/{container} is served")
            return
        source = self.server.lookup(parts[1], parts[2], parts[3])
        if source is None or not source.path.exists():
            self.send_error(404, f"container {parts[3]} of {parts[1]}/{parts[2]} not found")
            return
        query = parse_qs(url.query)
        follow = query.get("follow", ["false"])[0] == "true"
        tail = int(query.get("tailLines", ["-1"])[0])
        limit = int(query.get("limitBytes", ["-1"])[0])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        with source.path.open("rb") as log:
            data = log.read()
            if tail >= 0:
                data = _tail(data, tail)
            sent = self._send(data, limit)
            while follow and (limit < 0 or sent < limit) and not self.server.stopping.is_set():
                live = source.is_live()
                chunk = log.read()
                if chunk:
                    sent += self._send(chunk, limit - sent if limit >= 0 else -1)
                elif not live:
                    break
                else:
                    time.sleep(0.1)

    def _send(self, data: bytes, limit: int) -> int:
        if limit >= 0:
            data = data[:limit]
        if data:
            self.wfile.write(data)
            self.wfile.flush()
        return len(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    lookup: Lookup
    stopping: threading.Event


def serve(
    host: str, port: int, *, cert: Path, key: Path, client_ca: Path, lookup: Lookup
) -> tuple[_Server, threading.Thread]:
    """Start the TLS log endpoint in a thread.

    Args:
        host: Address to bind (the nodes' InternalIP).
        port: The kubelet port.
        cert: Serving certificate (SAN includes ``host``).
        key: Its key.
        client_ca: CA that signed the API server's kubelet client certificate.
        lookup: Maps (namespace, pod, container) to a log source.

    Returns:
        The server (``shutdown()`` it) and its thread.
    """
    server = _Server((host, port), _Handler)
    server.lookup = lookup
    server.stopping = threading.Event()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="kubelet-endpoint", daemon=True)
    thread.start()
    logger.info("kubelet endpoint on https://%s:%d", host, port)
    return server, thread
