"""`python -m arkor_ops.sidecar`: serve one run's event log as Server-Sent Events.

Environment (checked first; see docs/contracts.md):

| variable | default | meaning |
|---|---|---|
| ``ARKOR_JOB_ID`` | required | the run served at ``/v1/jobs/{job_id}/events/stream`` |
| ``ARKOR_STORAGE_URI`` | required | ``s3://bucket/prefix`` or ``file:///path`` |
| ``ARKOR_EVENT_LOG`` | ``/var/run/arkor/events.jsonl`` | the log the trainer writes |
| ``ARKOR_SIDECAR_HOST`` / ``ARKOR_SIDECAR_PORT`` | ``0.0.0.0`` / ``8377`` | where to listen |
| ``ARKOR_PING_SECONDS`` | ``15`` | keepalive interval |
| ``ARKOR_SHUTDOWN_GRACE_SECONDS`` | ``5`` | on SIGTERM, how long clients may keep reading |
| ``ARKOR_SIDECAR_MAX_STREAMS`` | ``64`` | most streams at once (one more: 503, ``Retry-After``) |
| ``ARKOR_SIDECAR_LINGER_SECONDS`` | unset | exit this long after the terminal event (local runs) |
| ``ARKOR_SIDECAR_WORKER_PID`` | unset | with a linger: also after this worker exits (local runs) |
| ``ARKOR_S3_ENDPOINT_URL``, ``AWS_*`` | | S3 access (see :mod:`arkor_ops.storage`) |

On SIGTERM (or SIGINT) it reads what is left of the log, persists it to
``{storage}/{job_id}/events.jsonl``, lets each connected client receive every event read so far
(at most the grace period), and exits 0. Exit code 2: the environment is invalid.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

from arkor_ops.settings import SettingsError, SidecarSettings, read

log = logging.getLogger("arkor_ops.sidecar")


def load_settings() -> SidecarSettings:
    """The settings from the environment.

    Raises:
        SettingsError: naming each missing or invalid variable.
    """
    return read(SidecarSettings, what="sidecar environment")


def _server_class() -> Any:
    import uvicorn

    from arkor_ops.sidecar.app import Sidecar

    class SidecarServer(uvicorn.Server):  # type: ignore[misc]
        """uvicorn, but shutdown first persists the log and drains the streams, and a signal
        ends the process with exit code 0 instead of being re-raised."""

        def __init__(self, config: Any, sidecar: Sidecar) -> None:
            super().__init__(config)
            self.sidecar = sidecar

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            signals = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            log.info(
                "stopping: persisting the log and draining %d stream(s)",
                len(self.server_state.connections),
            )
            await self.sidecar.stop()
            await super().shutdown(sockets)

    return SidecarServer


def main() -> int:
    """Run the sidecar until SIGTERM; returns the exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    import uvicorn

    from arkor_ops.sidecar.app import Sidecar, create_app

    sidecar = Sidecar(settings)
    config = uvicorn.Config(
        create_app(sidecar),
        host=settings.sidecar_host,
        port=settings.sidecar_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 2,
    )
    log.info(
        "serving %s (job %s) on %s:%d",
        settings.event_log,
        settings.job_id,
        settings.sidecar_host,
        settings.sidecar_port,
    )
    server = _server_class()(config, sidecar)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
