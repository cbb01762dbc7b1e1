"""Fixtures of the serving tests: the llama.cpp build, the tiny model and two committed adapters."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from arkor_ops.serving.endpoint import LocalEndpoint
from arkor_ops.storage import open_storage
from arkor_ops.worker.checkpoints import RunIdentity, upload_committed
from arkor_ops.worker.tiny import build_random_adapter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def llama_home() -> Path:
    """The llama.cpp build (scripts/build-llama-server.sh: a no-op once cached)."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "build-llama-server.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Three adapters committed in ``file://`` storage: ``a`` and ``b`` (different weights), and
    ``corrupt`` (``b``'s files, one of them changed after its manifest was written)."""
    root = tmp_path_factory.mktemp("adapters")
    identity = RunIdentity("cfg", "data", str(tiny_model_dir), {})
    storage = open_storage(f"file://{root}/store")
    uris = {}
    for name, seed in (("a", 1), ("b", 2), ("corrupt", 2)):
        local = build_random_adapter(tiny_model_dir, root / name, seed=seed)
        uri = f"file://{root}/store/{name}"
        upload_committed(storage, uri, local, 10, identity)
        uris[name] = uri
    weights = root / "store" / "corrupt" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return uris


@pytest.fixture(scope="session")
def base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Converted base models, shared by the tests' endpoints."""
    return tmp_path_factory.mktemp("base-gguf")


@pytest.fixture
def endpoint(
    llama_home: Path, tiny_model_dir: Path, tmp_path: Path, base_cache: Path
) -> Iterator[LocalEndpoint]:
    """The tiny model's endpoint ``triage`` (keys required), serving nothing yet."""
    ep = LocalEndpoint(
        "triage",
        tiny_model_dir,
        tmp_path / "endpoint",
        llama_cpp_home=llama_home,
        vocab_pre="gpt-2",
        gguf_type="f32",
        threads=1,
        base_cache=base_cache,
    )
    with ep:
        yield ep
