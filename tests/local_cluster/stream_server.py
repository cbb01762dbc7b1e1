"""A tiny HTTP server run inside test pods (shipped to them in a ConfigMap).

GET /          -> "hello from <POD_NAME>"
GET /env       -> JSON of the environment variables named in ?names=A,B
GET /events    -> a chunked text/event-stream of ?n= events, one every ?interval= seconds
GET /file      -> the content of the file at ?path=
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    """Routes the four paths above."""

    protocol_version = "HTTP/1.1"

    def _send(self, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        """Serve one request."""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            self._send(f"hello from {os.environ.get('POD_NAME', '?')}".encode())
        elif url.path == "/env":
            names = query.get("names", "").split(",")
            self._send(
                json.dumps({n: os.environ.get(n) for n in names}).encode(), "application/json"
            )
        elif url.path == "/file":
            self._send(Path(query["path"]).read_bytes())
        elif url.path == "/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(query.get("n", "5"))):
                data = f"id: {i}\ndata: {time.time()}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                time.sleep(float(query.get("interval", "0.5")))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(404)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    print(f"listening on {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
