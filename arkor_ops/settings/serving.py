"""Endpoints: where the CPU engine's build is (``arkor-ops serve``, :mod:`arkor_ops.serving`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings._common import environ

#: The llama-cpp-python release whose vendored llama.cpp is built (scripts/build-llama-server.sh).
LLAMA_CPP_VERSION = "0.3.36"


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
