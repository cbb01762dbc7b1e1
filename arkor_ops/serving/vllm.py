"""The GPU engine: vLLM's OpenAI server with LoRA enabled and runtime adapter loading.

vLLM runs in its own container of the endpoint's pod (``vllm serve BASE --enable-lora`` with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``, rendered by :mod:`arkor_ops.serving.cluster`); this
client is what the endpoint's gateway needs of it, the same verbs as
:class:`~arkor_ops.serving.llama_cpp.LlamaServer`'s: wait until it answers, load an adapter under
a name (``POST /v1/load_lora_adapter``: the adapter's Hugging Face folder, which vLLM reads
as PEFT wrote it, no conversion), unload one (``POST /v1/unload_lora_adapter``). Requests go to
:attr:`url` with ``"model": <name>``; the base model alone is the served model name
(:attr:`base_name`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from arkor_ops.errors import ServingError

log = logging.getLogger(__name__)


class VllmServer:
    """A running vLLM OpenAI server at ``url``, serving the base model as ``base_name``."""

    def __init__(self, url: str, base_name: str, *, start_timeout: float = 1800.0) -> None:
        self.url = url.rstrip("/")
        self.base_name = base_name
        self.start_timeout = start_timeout
        self.loaded: list[str] = []
        self._http = httpx.Client(base_url=self.url, timeout=600.0)

    def start(self) -> VllmServer:
        """Wait until vLLM answers ``/health`` (it loads and compiles the model first).

        Raises:
            ServingError: it did not within ``start_timeout`` seconds.
        """
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if self._http.get("/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ServingError(
                    f"vLLM at {self.url} did not answer /health within {self.start_timeout:.0f} s "
                    "(its container's log says why: kubectl logs deploy/endpoint-NAME -c vllm)"
                )
            time.sleep(2.0)

    def stop(self) -> None:
        """Close the connections (vLLM's container is stopped with the pod)."""
        self._http.close()

    def load(self, name: str, adapter: Path) -> None:
        """Load the adapter folder ``adapter`` as model ``name``; return once it is served.

        Raises:
            ServingError: vLLM refused it (its message says why: rank above
                ``--max-lora-rank``, modules the model has not, a base it was not trained on).
        """
        try:
            resp = self._http.post(
                "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(adapter)}
            )
        except httpx.TransportError as exc:
            raise ServingError(f"vLLM did not answer the load of {name}: {exc}") from exc
        if resp.status_code != 200:
            raise ServingError(f"vLLM refused adapter {name}: {resp.status_code} {resp.text[:500]}")
        self.loaded.append(name)

    def unload(self, name: str) -> None:
        """Unload adapter ``name`` (a failure is logged: the adapter only takes memory)."""
        try:
            resp = self._http.post("/v1/unload_lora_adapter", json={"lora_name": name})
            if resp.status_code != 200:
                log.warning(
                    "vLLM did not unload %s: %s %s", name, resp.status_code, resp.text[:200]
                )
        except httpx.TransportError as exc:
            log.warning("vLLM did not answer the unload of %s: %s", name, exc)
        if name in self.loaded:
            self.loaded.remove(name)
