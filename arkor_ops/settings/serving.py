"""Endpoints: where the CPU engine's build is (``arkor-ops serve``, :mod:`arkor_ops.serving`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings._common import environ

#: The llama-cpp-python release whose vendored llama.cpp is built (scripts/build-llama-server.sh).
LLAMA_CPP_VERSION = "0.3.36"
#: The vLLM release of the GPU engine's image (``vllm/vllm-openai:v<version>``).
VLLM_VERSION = "0.34.0"


def default_llama_cpp_home() -> Path:
    """``~/.cache/arkor-ops/llama.cpp-<version>`` (``$XDG_CACHE_HOME`` respected)."""
    base = environ().get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "arkor-ops" / f"llama.cpp-{LLAMA_CPP_VERSION}"


class ServingSettings(BaseSettings):
    """The serving engine's build."""

    model_config = SettingsConfigDict(
        env_prefix="ARKOR_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    llama_cpp_home: Path | None = Field(
        default=None,
        description="The llama.cpp build (`bin/llama-server`, its converters); default: "
        f"`~/.cache/arkor-ops/llama.cpp-{LLAMA_CPP_VERSION}`, what "
        "`scripts/build-llama-server.sh` builds.",
    )


class EndpointPodSettings(BaseSettings):
    """What an endpoint's pod is told (``python -m arkor_ops.serving.pod``; the Deployment
    :mod:`arkor_ops.serving.cluster` renders sets every one)."""

    model_config = SettingsConfigDict(
        env_prefix="ARKOR_ENDPOINT_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    name: str = Field(default="", description="The endpoint's name (clients send it as `model`).")
    namespace: str = Field(default="default", description="The namespace of its objects.")
    base_model: str = Field(
        default="", description="The base model: a Hub id, an `s3://` folder or a path."
    )
    auth: Literal["key", "none"] = Field(default="key", description="`key` or `none`.")
    port: int = Field(default=8000, ge=1, le=65535, description="The gateway's port.")
    poll_seconds: float = Field(
        default=2.0, gt=0, description="How often the pod reads its target and keys."
    )
    workdir: Path = Field(
        default=Path("/tmp/arkor-endpoint"),  # noqa: S108 - the pod's own emptyDir
        description="GGUF files and the engine's log (an emptyDir).",
    )
    threads: int | None = Field(default=None, ge=1, description="llama-server's threads.")
    engine: Literal["llama.cpp", "vllm"] = Field(
        default="llama.cpp",
        description="`llama.cpp` (started by the pod, CPU) or `vllm` (the pod's vLLM container).",
    )
    engine_url: str = Field(
        default="http://127.0.0.1:8001", description="Where the vLLM container answers (`vllm`)."
    )
    base_dir: Path | None = Field(
        default=None,
        description="The base model's folder, fetched by the pod's init container (`vllm`).",
    )
    vocab_pre: str | None = Field(
        default=None,
        description="llama.cpp's pre-tokenizer name, for a tokenizer it does not know.",
    )
