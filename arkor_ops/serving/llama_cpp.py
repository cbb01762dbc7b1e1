"""The CPU engine: llama.cpp's ``llama-server`` in router mode.

Chosen after trying it (docs/serving.md says more): it runs on a laptop's or a CI machine's CPU,
speaks the OpenAI API (chat completions, streaming, ``/v1/models``), applies LoRA adapters in
GGUF, and in router mode loads and unloads model instances at runtime, which is what a hot swap
needs: the router (``llama-server`` with no model) reads presets from an INI file, starts one
child server per preset on ``POST /models/load``, forwards each request by its body's
``"model"``, and stops a child on ``POST /models/unload``; ``GET /models?reload=1`` re-reads the
file. An endpoint's versions are presets (base GGUF + adapter GGUF), so a new version is loaded
beside the serving one and nothing restarts.

The build comes from ``scripts/build-llama-server.sh`` (pinned, cached by version under
``~/.cache/arkor-ops/llama.cpp-<version>``); :func:`llama_cpp_home` finds it.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from arkor_ops.errors import ServingError
from arkor_ops.settings import ServingSettings, default_llama_cpp_home, read

log = logging.getLogger(__name__)

HOME_ENV = "ARKOR_LLAMA_CPP_HOME"
_BUILD = "scripts/build-llama-server.sh"


def llama_cpp_home(home: str | Path | None = None) -> Path:
    """The llama.cpp build: ``home``, else ``$ARKOR_LLAMA_CPP_HOME``, else the cached build.

    Raises:
        ServingError: there is no complete build there (the message says how to make one).
    """
    if home is None:
        home = read(ServingSettings).llama_cpp_home or default_llama_cpp_home()
    path = Path(home)
    if not (path / "bin" / "llama-server").is_file():
        raise ServingError(
            f"no llama.cpp build at {path} (bin/llama-server is missing): run {_BUILD} "
            f"(once, about 15 minutes), or set {HOME_ENV} to a build"
        )
    return path


_LISTENING = re.compile(r"listening on http://[^\s]*:(\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Preset:
    """One model instance the router can start: a base GGUF and, optionally, a LoRA GGUF."""

    name: str
    model: Path
    lora: Path | None = None

    def options(self) -> dict[str, str]:
        """The INI section's keys (llama-server's flags without their dashes)."""
        keys = {"model": str(self.model)}
        if self.lora is not None:
            keys["lora"] = str(self.lora)
        return keys


class LlamaServer:
    """A ``llama-server`` router process, and the presets it serves.

    ``start()`` launches the router on ``host:port`` with an empty preset file; :meth:`load`
    adds a preset and starts its instance, returning once it answers; :meth:`unload` stops an
    instance and drops its preset. Requests go to :attr:`url` with ``"model": <preset name>``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        home: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        ctx_size: int = 2048,
        threads: int | None = None,
        parallel: int = 4,
        load_timeout: float = 120.0,
    ) -> None:
        self.home = llama_cpp_home(home)
        self.workdir = workdir
        self.host = host
        self.port = port  # None: the router binds a port of its own choosing (--port 0)
        self.load_timeout = load_timeout
        self._globals = {"ctx-size": str(ctx_size), "parallel": str(parallel)}
        if threads is not None:
            self._globals["threads"] = str(threads)
        self._presets: dict[str, Preset] = {}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=30.0)
        self.preset_file = workdir / "presets.ini"
        self.log_file = workdir / "llama-server.log"

    @property
    def url(self) -> str:
        """The router's base URL (known once :meth:`start` has bound its port)."""
        if self.port is None:
            raise ServingError("llama-server has no port yet: start() it first")
        return f"http://{self.host}:{self.port}"

    # -- process ---------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> LlamaServer:
        """Start the router and wait until it answers ``/health``.

        Without a port given, the router binds one itself (``--port 0``) and the port is read
        from its log: a port picked here and handed over would be free when picked and could
        be taken (by any outgoing connection's local port) before the router binds it.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_presets()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        cmd = [
            str(self.home / "bin" / "llama-server"),
            "--host",
            self.host,
            "--port",
            str(self.port or 0),
            "--models-preset",
            str(self.preset_file),
            "--no-models-autoload",
            "--models-max",
            "0",
        ]
        with self.log_file.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise ServingError(
                    f"llama-server exited with status {self._proc.returncode} on start; "
                    f"its log: {self.log_file}\n{self.log_tail()}"
                )
            if self.port is None:
                self.port = self._bound_port(log_start)
            try:
                if self.port and self._http.get(self.url + "/health").status_code == 200:
                    self._http.close()
                    self._http = httpx.Client(base_url=self.url, timeout=30.0)
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ServingError(f"llama-server did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    def _bound_port(self, offset: int) -> int | None:
        """The port the router logged ``listening on`` after ``offset`` of its log, or None."""
        with self.log_file.open("rb") as f:
            f.seek(offset)
            found = _LISTENING.search(f.read().decode(errors="replace"))
        return int(found.group(1)) if found else None

    def stop(self) -> None:
        """Stop the router and its instances."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._http.close()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        """The end of the router's log (its instances log there too)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- presets ---------------------------------------------------------------------------

    def _write_presets(self) -> None:
        ini = configparser.ConfigParser(interpolation=None)
        ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
        ini["*"] = self._globals
        for preset in self._presets.values():
            ini[preset.name] = preset.options()
        tmp = self.preset_file.with_suffix(".tmp")
        with tmp.open("w") as f:
            f.write("version = 1\n\n")
            ini.write(f)
        os.replace(tmp, self.preset_file)

    def status(self, name: str) -> dict[str, Any] | None:
        """The router's status object for ``name`` (``{"value": "loaded", ...}``), or None."""
        resp = self._http.get("/models")
        resp.raise_for_status()
        for entry in resp.json().get("data", []):
            if entry.get("id") == name:
                status: dict[str, Any] = entry.get("status") or {}
                return status
        return None

    def load(self, preset: Preset) -> None:
        """Add ``preset`` and start its instance; return when it serves requests.

        Raises:
            ServingError: the instance exits or does not load within ``load_timeout`` (the
                preset is dropped again; instances already serving are untouched).
        """
        with self._lock:
            if preset.name in self._presets:
                raise ServingError(f"{preset.name} is already loaded")
            self._presets[preset.name] = preset
            self._write_presets()
        try:
            self._http.get("/models", params={"reload": "1"}).raise_for_status()
            resp = self._http.post("/models/load", json={"model": preset.name})
            if resp.status_code >= 400:
                raise ServingError(f"llama-server refused to load {preset.name}: {resp.text[:300]}")
            self._wait_loaded(preset.name)
        except (ServingError, httpx.HTTPError) as exc:
            self._drop(preset.name)
            if isinstance(exc, ServingError):
                raise
            raise ServingError(f"loading {preset.name}: {exc}") from exc

    def _wait_loaded(self, name: str) -> None:
        deadline = time.monotonic() + self.load_timeout
        while True:
            status = self.status(name) or {}
            if status.get("value") == "loaded":
                return
            if status.get("failed"):
                raise ServingError(
                    f"llama-server could not load {name} (exit status "
                    f"{status.get('exit_code')}); its log says:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ServingError(f"{name} did not load within {self.load_timeout:.0f} s")
            time.sleep(0.1)

    def unload(self, name: str) -> None:
        """Stop the instance of ``name`` and drop its preset."""
        try:
            self._http.post("/models/unload", json={"model": name})
        except httpx.HTTPError as exc:
            log.warning("unloading %s: %s", name, exc)
        self._drop(name)

    def _drop(self, name: str) -> None:
        with self._lock:
            if self._presets.pop(name, None) is not None:
                self._write_presets()
        try:
            self._http.get("/models", params={"reload": "1"})
        except httpx.HTTPError as exc:
            log.warning("reloading presets after dropping %s: %s", name, exc)

    @property
    def loaded(self) -> list[str]:
        """Names of the presets this process added and has not unloaded."""
        return list(self._presets)


def quantize(home: Path, src: Path, dest: Path, kind: str) -> Path:
    """``llama-quantize`` ``src`` (an f16/f32 GGUF) to ``kind`` (``q8_0``, ``q4_k_m``) at ``dest``.

    Written beside ``dest`` and renamed into place, so a half-written file is never at ``dest``.
    """
    tmp = dest.with_name(dest.name + ".partial")
    proc = subprocess.run(
        [str(home / "bin" / "llama-quantize"), str(src), str(tmp), kind.upper()],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ServingError(f"llama-quantize {kind} failed: {proc.stderr.strip()[-500:]}")
    os.replace(tmp, dest)
    return dest
