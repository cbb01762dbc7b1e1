"""A local endpoint: the CPU engine and the gateway on one machine (``arkor-ops serve``).

:class:`LocalEndpoint` converts the base model to GGUF once (kept in the endpoint's folder,
keyed by the model files' sha256), starts llama-server in router mode and the gateway on
``host:port``, and serves one version at a time. :meth:`LocalEndpoint.deploy` is the hot swap:

1. the adapter is fetched from storage (``file://`` or ``s3://``) and every file is checked
   against its committed ``manifest.json``: an uncommitted adapter or a file that fails its
   sha256 is refused with :class:`~arkor_ops.errors.CheckpointError`;
2. it is converted to GGUF and loaded as a new engine instance beside the serving one; a
   conversion or load failure is a :class:`~arkor_ops.errors.ServingError`;
3. only then does the gateway send new requests to it; the old instance finishes what it has and
   is unloaded.

Whatever fails, the version that served before keeps serving, and the failure is logged and kept
in :attr:`LocalEndpoint.history`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arkor_ops.checkpoints import committed_adapter
from arkor_ops.errors import ArkorOpsError, ServingError
from arkor_ops.serving.gateway import Gateway
from arkor_ops.serving.gguf import adapter_gguf, base_gguf
from arkor_ops.serving.keys import KeyFile
from arkor_ops.serving.llama_cpp import LlamaServer, Preset
from arkor_ops.serving.vllm import VllmServer
from arkor_ops.storage import open_storage
from arkor_ops.worker.checkpoints import download_files

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
BASE = "base"


def check_name(name: str) -> str:
    """``name`` if it can name an endpoint (a DNS label: it becomes a Service name)."""
    if not _NAME.match(name):
        raise ServingError(
            f"endpoint name {name[:80]!r}: use 1-63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _files_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class SwapRecord:
    """One :meth:`LocalEndpoint.deploy`: what was asked, and what came of it."""

    version: str
    adapter_uri: str | None
    ok: bool
    error: str | None
    at: float
    seconds: float


class LocalEndpoint:
    """An OpenAI-compatible endpoint on this machine serving ``base_model`` and one adapter.

    Args:
        name: the endpoint's name, which clients send as ``"model"``.
        base_model: the Hugging Face folder of the base model the adapters were trained on.
        workdir: the endpoint's folder (GGUF files, presets, logs, ``keys.jsonl``).
        auth: ``"key"`` (requests need a key of :attr:`keys`) or ``"none"``.
        vocab_pre: for a base model whose tokenizer llama.cpp's converter does not know
            (:mod:`arkor_ops.serving._convert`).
        base_cache: where converted base models are kept (default ``workdir/base``), keyed by
            the sha256 of the model's files, the GGUF type and ``vocab_pre``.
        verify: checks a request's key instead of :attr:`keys` (the endpoint pod's copy of
            its Secret, :class:`arkor_ops.serving.keys.KeySet`).
        vllm: serve through this vLLM server instead of llama.cpp (the GPU engine: adapters
            are loaded as PEFT wrote them, nothing is converted; the base model is vLLM's).
    """

    def __init__(
        self,
        name: str,
        base_model: Path,
        workdir: Path,
        *,
        auth: str = "key",
        host: str = "127.0.0.1",
        port: int | None = None,
        llama_cpp_home: str | Path | None = None,
        vocab_pre: str | None = None,
        gguf_type: str = "f16",
        threads: int | None = None,
        base_cache: Path | None = None,
        verify: Callable[[str], bool] | None = None,
        vllm: VllmServer | None = None,
    ) -> None:
        if auth not in ("key", "none"):
            raise ServingError(f"auth {auth!r}: use 'key' or 'none'")
        self.name = check_name(name)
        if not (base_model / "config.json").is_file():
            raise ServingError(
                f"base model {base_model}: no config.json there (give the Hugging Face folder "
                "of the model the adapters were trained on)"
            )
        self.base_model = base_model
        self.workdir = workdir
        self.keys = KeyFile(workdir / "keys.jsonl")
        self.host = host
        self.port = port  # None or 0: a port the system picks when start() binds the gateway
        self.vocab_pre = vocab_pre
        self.gguf_type = gguf_type
        self.base_cache = base_cache or workdir / "base"
        self.history: list[SwapRecord] = []
        self.vllm = vllm
        # llama.cpp unless vLLM is given (it runs in a container of its own, see vllm.py)
        self.engine = LlamaServer(workdir / "engine", home=llama_cpp_home, threads=threads)
        check = (verify or self.keys.verify) if auth == "key" else None
        self.gateway = Gateway(name, None, verify=check)
        self._folders: dict[str, Path] = {}  # engine instance -> its files
        self._swap = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._base_gguf: Path | None = None

    @property
    def url(self) -> str:
        """The gateway's base URL (known once :meth:`start` has bound its port)."""
        if not self.port:
            raise ServingError(f"endpoint {self.name} has no port yet: start() it first")
        return f"http://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalEndpoint:
        """Bind the gateway's port, convert the base model (once), start engine and gateway.

        The port is bound first and held: picked early and bound after the conversion, it
        could be taken in between (any outgoing connection may get it as its local port).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._socket = self._bind()
        try:
            if self.vllm is not None:
                self.vllm.start()
                self.gateway.engine_url = self.vllm.url
            else:
                self._base_gguf = self._convert_base()
                self.engine.start()
                self.gateway.engine_url = self.engine.url
            self._start_gateway()
        except BaseException:
            self._stop_engine()
            self._socket.close()
            raise
        return self

    def _stop_engine(self) -> None:
        if self.vllm is not None:
            self.vllm.stop()
        else:
            self.engine.stop()

    def _bind(self) -> socket.socket:
        try:
            return socket.create_server((self.host, self.port or 0))
        except OSError as err:
            raise ServingError(
                f"endpoint {self.name}: cannot listen on {self.host}:{self.port} ({err.strerror}); "
                "give another port (0 lets the system pick a free one)"
            ) from err

    def close(self) -> None:
        """Stop the gateway and the engine."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._socket is not None:
            self._socket.close()
        self._stop_engine()

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _convert_base(self) -> Path:
        key = _files_sha256(self.base_model)[:16]
        pre = f"-{self.vocab_pre}" if self.vocab_pre else ""
        dest = self.base_cache / f"{key}-{self.gguf_type}{pre}.gguf"
        if not dest.is_file():
            log.info("converting %s to GGUF (%s)", self.base_model, self.gguf_type)
            base_gguf(
                self.engine.home,
                self.base_model,
                dest,
                outtype=self.gguf_type,
                vocab_pre=self.vocab_pre,
            )
        return dest

    def _start_gateway(self) -> None:
        import uvicorn

        assert self._socket is not None  # bound by start()
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            self.gateway.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"endpoint-{self.name}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ServingError(f"the gateway of {self.name} did not start on {self.url}")
            time.sleep(0.02)

    # -- versions --------------------------------------------------------------------------

    @property
    def serving(self) -> str | None:
        """The version new requests go to (``base`` for the base model alone), or None."""
        active = self.gateway.active
        return None if active is None else active.partition("@")[2]

    def deploy(self, version: str, adapter_uri: str | None) -> None:
        """Serve ``adapter_uri`` (a committed adapter) as ``version``; None serves the base.

        Raises:
            CheckpointError: the adapter is not committed, or a file fails its sha256.
            ServingError: the conversion or the engine's load failed.
            In each case the version serving before keeps serving.
        """
        if not _VERSION.match(version):
            raise ServingError(f"version {version[:80]!r}: use letters, digits, '.', '_', '-'")
        t0 = time.monotonic()
        with self._swap:
            try:
                self._deploy(version, adapter_uri)
            except ArkorOpsError as exc:
                log.warning(
                    "%s: version %s refused, %s keeps serving: %s",
                    self.name,
                    version,
                    self.serving or "nothing",
                    exc,
                )
                self._record(version, adapter_uri, t0, str(exc))
                raise
            self._record(version, adapter_uri, t0, None)

    def _record(self, version: str, uri: str | None, t0: float, error: str | None) -> None:
        self.history.append(
            SwapRecord(version, uri, error is None, error, time.time(), time.monotonic() - t0)
        )

    def _deploy(self, version: str, adapter_uri: str | None) -> None:
        instance = f"{self.name}@{version}"
        if instance == self.gateway.active:
            return
        if instance in self._folders:
            raise ServingError(f"version {version} is being loaded already")
        folder = self.workdir / "versions" / f"{version}.{uuid.uuid4().hex[:8]}"
        self._folders[instance] = folder
        try:
            adapter = None if adapter_uri is None else self._fetch(adapter_uri, folder)
            instance = self._load(instance, adapter, folder)
        except BaseException:
            self._forget(instance)
            raise
        old = self.gateway.switch(instance)
        if old is not None:
            self._unload(old)
            self._forget(old)

    def _load(self, instance: str, adapter: Path | None, folder: Path) -> str:
        """Load ``adapter`` (None: the base model) beside what serves; the instance to route to."""
        if self.vllm is not None:
            if adapter is None:  # vLLM serves the base model under one name, loaded at start
                self._folders[self.vllm.base_name] = self._folders.pop(instance)
                return self.vllm.base_name
            self.vllm.load(instance, adapter)
            return instance
        assert self._base_gguf is not None, "start() the endpoint first"
        lora = None
        if adapter is not None:
            lora = adapter_gguf(
                self.engine.home, adapter, self.base_model, folder / "adapter.gguf", outtype="f32"
            )
        self.engine.load(Preset(instance, self._base_gguf, lora))
        return instance

    def _unload(self, instance: str) -> None:
        if self.vllm is None:
            self.engine.unload(instance)
        elif instance != self.vllm.base_name:
            self.vllm.unload(instance)

    def _forget(self, instance: str) -> None:
        folder = self._folders.pop(instance, None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def _fetch(self, uri: str, folder: Path) -> Path:
        """Download the adapter into ``folder``, every file checked; return its folder."""
        uri = uri.rstrip("/")
        storage = open_storage(uri)
        manifest = committed_adapter(storage, uri, label="adapter")
        return download_files(storage, uri, manifest, folder / "adapter", label=f"adapter {uri}")
