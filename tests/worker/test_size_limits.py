"""Dataset size caps, through a real HTTP server on loopback: a too-big body (with and without a
Content-Length) and a gzip ``Content-Encoding`` bomb whose wire size is under the cap but whose
decoded size is not. Each fails the run with exit 2 naming ``ARKOR_MAX_DATASET_BYTES``; a
gzip-encoded dataset under the cap trains as usual."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.config import BlobDataset
from arkor_ops.worker.data import fetch_blob, read_file
from tests.worker.helpers import ROWS, RunDir, base_config, run_inprocess

pytestmark = [pytest.mark.s3]

CAP = 1 << 20  # 1 MiB
ROWS_JSONL = "".join(json.dumps(r) + "\n" for r in ROWS["chatml"](8)).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        headers: dict[str, str] = {"Content-Type": "application/x-ndjson"}
        if path == "/big-with-length.jsonl":
            body: bytes | Iterator[bytes] = b"x" * (CAP + 10)
        elif path == "/big-streamed.jsonl":
            body = (b"y" * 65536 for _ in range(64))  # 4 MiB, no Content-Length
        elif path == "/bomb.jsonl":
            body = self.server.bomb  # type: ignore[attr-defined]
            headers["Content-Encoding"] = "gzip"
        elif path == "/gzipped.jsonl":
            body = gzip.compress(ROWS_JSONL)
            headers["Content-Encoding"] = "gzip"
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        if isinstance(body, bytes):
            self.send_header("Content-Length", str(len(body)))
            body = iter([body])
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in body:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker stopped reading at its cap
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # type: ignore[attr-defined]
    assert len(srv.bomb) < CAP  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("path", ["/big-with-length.jsonl", "/big-streamed.jsonl", "/bomb.jsonl"])
def test_a_dataset_over_the_cap_fails_the_run_naming_the_setting(
    tmp_path: Path, run_dir: RunDir, server: str, path: str
) -> None:
    run_dir.extra_env["ARKOR_MAX_DATASET_BYTES"] = str(CAP)
    config = base_config(tmp_path / "no-model", {"type": "blob", "url": server + path})

    code = run_inprocess(run_dir.env(config))

    assert code == 2
    (failed,) = run_dir.events()
    assert failed.type == "training.failed"
    assert f"larger than ARKOR_MAX_DATASET_BYTES={CAP} bytes" in failed.error
    assert path in failed.error
    downloaded = list((run_dir.root / "work").rglob("dataset.*"))
    assert all(p.stat().st_size <= CAP for p in downloaded), downloaded


def test_a_gzip_encoded_dataset_under_the_cap_is_decoded(tmp_path: Path, server: str) -> None:
    source = BlobDataset(type="blob", url=server + "/gzipped.jsonl")

    path, kind = fetch_blob(source, tmp_path, CAP)

    assert path.read_bytes() == ROWS_JSONL
    assert read_file(path, kind) == ROWS["chatml"](8)


def test_a_local_file_over_the_cap_is_refused_before_it_is_read(
    tmp_path: Path, run_dir: RunDir
) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(ROWS_JSONL * (CAP // len(ROWS_JSONL) + 1))
    run_dir.extra_env["ARKOR_MAX_DATASET_BYTES"] = str(CAP)
    config = base_config(tmp_path / "no-model", {"type": "file", "path": str(path)})

    assert run_inprocess(run_dir.env(config)) == 2
    assert "larger than ARKOR_MAX_DATASET_BYTES" in run_dir.events()[0].error
