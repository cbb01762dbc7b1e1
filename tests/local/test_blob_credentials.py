"""A presigned blob URL's query string is a credential: the real worker downloads with it, and
it is nowhere else (wire config, stored config.json, manifests, events, TrainingJob.config)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from arkor_ops import create_async_trainer
from arkor_ops.backends.local import LocalBackend, LocalSettings
from arkor_ops.storage import open_storage
from tests.local.helpers import REPO

pytestmark = [pytest.mark.train, pytest.mark.s3, pytest.mark.timeout(300)]

SIGNATURE = "5f1c0ffee7a9b3d2e4c6a8b0d2f4e6a8"
QUERY = f"X-Amz-Expires=600&X-Amz-Signature={SIGNATURE}"
ROWS = (REPO / "examples" / "triage" / "test.jsonl").read_bytes()


class _Presigned(BaseHTTPRequestHandler):
    """Serves the rows only to a request that carries the signature, like a presigned URL."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.path != f"/bucket/rows.jsonl?{QUERY}":
            self.send_response(403)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(ROWS)))
        self.end_headers()
        self.wfile.write(ROWS)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def presigned_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Presigned)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/bucket/rows.jsonl?{QUERY}"
    finally:
        srv.shutdown()
        srv.server_close()


async def test_presigned_query_is_used_to_download_and_stored_nowhere(
    runs_dir: Path, tiny_model_dir: Path, s3_prefix: str, presigned_url: str
) -> None:
    backend = LocalBackend(
        LocalSettings(runs_dir=runs_dir, storage_uri=s3_prefix, sidecar_linger_seconds=1)
    )
    trainer = create_async_trainer(
        name="presigned",
        model=str(tiny_model_dir),
        dataset={"type": "blob", "url": presigned_url},
        lora={"r": 4, "alpha": 8, "max_length": 256},
        max_steps=2,
        save_steps=1,
        batch_size=2,
        backend=backend,
    )
    result = await trainer.wait()
    assert result.job.status == "completed", result.job.error
    assert any(SIGNATURE in p for p in _Presigned.seen)  # the worker used the full URL

    assert SIGNATURE not in str(result.job.config)
    assert result.job.config["dataset"]["url"].endswith("/bucket/rows.jsonl")
    storage = open_storage(s3_prefix)
    events = f"{s3_prefix}/{result.job.id}/events.jsonl"
    for _ in range(240):  # the sidecar persists the log after the client saw the terminal event
        if storage.exists(events):
            break
        await asyncio.sleep(0.25)
    stored = storage.list(f"{s3_prefix}/{result.job.id}/")
    names = [u.rsplit("/", 1)[1] for u in stored]
    assert "config.json" in names and "manifest.json" in names and "events.jsonl" in names
    for uri in stored:
        if uri.endswith((".json", ".jsonl")):
            assert SIGNATURE.encode() not in storage.get_bytes(uri), uri
    for path in (runs_dir / result.job.id).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".log"):
            assert SIGNATURE not in path.read_text(errors="replace"), path
