"""`arkor-ops studio` as users start it: the real command in a subprocess, its printed URL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.local.helpers import REPO

URL_LINE = re.compile(r"arkor-ops studio: (http://\S+)")


class Studio:
    """``arkor-ops studio --backend local --no-open`` over the runs under ``runs_dir`` (or
    the backend ``args`` name).

    Args:
        runs_dir: the local backend's runs folder (shared with the runs the test starts).
        log: where the command's output goes (the URL is read from it).
        args: the backend options (default: the local backend).
        env: the environment (default: this process's), plus the runs folder.
    """

    def __init__(
        self,
        runs_dir: Path,
        log: Path,
        *,
        args: Sequence[str] = ("--backend", "local"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = {
            **(os.environ if env is None else env),
            "PYTHONPATH": str(REPO),
            "ARKOR_RUNS_DIR": str(runs_dir),
            "ARKOR_SIDECAR_LINGER_SECONDS": "1",
        }
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "arkor_ops.cli", "studio", *args, "--no-open"],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.url = self._printed_url()
        parts = urlsplit(self.url)
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.token = parts.query.removeprefix("token=")

    def _printed_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = URL_LINE.search(self.log.read_text())
            if found:
                return found.group(1)
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.1)
        raise AssertionError(f"the studio printed no URL: {self.log.read_text()}")

    def client(self, *, token: str | None = None) -> httpx.Client:
        """A client of the studio; with ``token``, it sends it as the header scripts use."""
        headers = {"x-arkor-studio-token": token} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode
