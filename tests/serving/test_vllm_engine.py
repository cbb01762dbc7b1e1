"""The endpoint's vLLM path against a stand-in for vLLM's OpenAI server (no GPU here).

STAND-IN, named as such: ``_VllmStandIn`` answers the four routes the endpoint uses of a real
``vllm serve --enable-lora`` with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (``/health``,
``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``, ``/v1/chat/completions``), and records
what it was asked. It generates nothing: an answer names the adapter that was asked for. What
this tests is ours: the adapter is fetched and checked before vLLM is asked to load it, vLLM gets
the folder PEFT wrote (no conversion), traffic moves to the new name, the old one is unloaded, a
refused adapter leaves the old version serving. vLLM itself runs in ``bench/gpu_vllm.py`` on a
GPU machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from arkor_ops.errors import CheckpointError
from arkor_ops.serving.endpoint import LocalEndpoint
from arkor_ops.serving.vllm import VllmServer
from arkor_ops.testing._server import ServerThread

pytestmark = pytest.mark.serving


class _VllmStandIn:
    """A stand-in for vLLM's OpenAI server's LoRA routes (see the module docstring)."""

    def __init__(self, base_name: str) -> None:
        self.base_name = base_name
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.app = Starlette(
            routes=[
                Route("/health", self._health),
                Route("/v1/load_lora_adapter", self._load, methods=["POST"]),
                Route("/v1/unload_lora_adapter", self._unload, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )

    async def _health(self, request: Request) -> JSONResponse:
        return JSONResponse({})

    async def _load(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(("load", body))
        folder = Path(body["lora_path"])
        if not (folder / "adapter_config.json").is_file():  # what vLLM reads first
            return JSONResponse({"message": f"no adapter_config.json in {folder}"}, 400)
        self.loaded[body["lora_name"]] = body["lora_path"]
        return JSONResponse({})

    async def _unload(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.calls.append(("unload", body))
        self.loaded.pop(body["lora_name"], None)
        return JSONResponse({})

    async def _chat(self, request: Request) -> JSONResponse:
        model = (await request.json())["model"]
        if model != self.base_name and model not in self.loaded:
            return JSONResponse({"message": f"model {model} does not exist"}, 404)
        message = {"role": "assistant", "content": f"answered by {model}"}
        return JSONResponse(
            {"model": model, "choices": [{"index": 0, "message": message}], "object": "chat"}
        )


@pytest.fixture
def vllm() -> Iterator[tuple[_VllmStandIn, str]]:
    stand_in = _VllmStandIn("triage@base")
    server = ServerThread(stand_in.app, name="vllm-stand-in")
    try:
        yield stand_in, server.url
    finally:

        async def nothing() -> None:
            return None

        server.stop(nothing)


def _ask(url: str, key: str) -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "triage", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def test_versions_are_verified_then_loaded_into_vllm_and_the_old_one_unloaded(
    vllm: tuple[_VllmStandIn, str],
    tiny_model_dir: Path,
    adapters: dict[str, str],
    tmp_path: Path,
) -> None:
    stand_in, url = vllm
    endpoint = LocalEndpoint(
        "triage", tiny_model_dir, tmp_path / "ep", vllm=VllmServer(url, "triage@base")
    )
    with endpoint:
        key = endpoint.keys.create("test")
        endpoint.deploy("1", adapters["a"])
        first = _ask(endpoint.url, key)
        assert first.status_code == 200, first.text
        assert first.json()["model"] == "triage@1"  # the gateway's name for what answered
        ((kind, load),) = stand_in.calls
        assert kind == "load" and load["lora_name"] == "triage@1"
        folder = Path(load["lora_path"])
        # PEFT's files as trained (each checked against the manifest), nothing converted
        assert (folder / "adapter_config.json").is_file()
        assert (folder / "adapter_model.safetensors").is_file()
        assert not list(folder.parent.rglob("*.gguf"))

        endpoint.deploy("2", adapters["b"])
        assert _ask(endpoint.url, key).json()["model"] == "triage@2"
        assert stand_in.calls[1:] == [
            ("load", {"lora_name": "triage@2", "lora_path": stand_in.loaded["triage@2"]}),
            ("unload", {"lora_name": "triage@1"}),
        ]
        assert not folder.exists()  # the old version's files are gone with it

        # a corrupted adapter is refused before vLLM is asked anything; v2 keeps answering
        with pytest.raises(CheckpointError, match="sha256"):
            endpoint.deploy("3", adapters["corrupt"])
        assert len(stand_in.calls) == 3
        assert _ask(endpoint.url, key).json()["model"] == "triage@2"

        # the base model alone is vLLM's served model name
        endpoint.deploy("base", None)
        assert _ask(endpoint.url, key).json()["model"] == "triage@base"
        assert stand_in.calls[-1] == ("unload", {"lora_name": "triage@2"})
