"""Exports of a committed adapter: merged weights and GGUF files that llama-server loads and that
answer as the adapter does in transformers; a bad adapter leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from arkor_ops.errors import CheckpointError, ServingError
from arkor_ops.serving.export import export
from arkor_ops.serving.llama_cpp import LlamaServer, Preset
from arkor_ops.worker.checkpoints import sha256_file
from tests.serving.helpers import TICKET, greedy_transformers

pytestmark = pytest.mark.serving


def test_merged_and_gguf_exports_answer_as_the_adapter_does(
    llama_home: Path, tiny_model_dir: Path, adapters: dict[str, str], tmp_path: Path
) -> None:
    adapter = Path(adapters["a"].removeprefix("file://"))
    before = {p.name: sha256_file(p) for p in adapter.iterdir()}
    dest = tmp_path / "export"
    record = export(
        adapters["a"],
        tiny_model_dir,
        dest,
        ["merged", "gguf-f32", "gguf-q8_0", "gguf-q4_k_m"],
        home=llama_home,
        vocab_pre="gpt-2",
    )
    assert json.loads((dest / "export.json").read_text()) == record
    paths = {f["path"] for f in record["files"]}
    assert {"model-f32.gguf", "model-q8_0.gguf", "model-q4_k_m.gguf"} <= paths
    assert "merged/model.safetensors" in paths and "merged/config.json" in paths
    for f in record["files"]:
        assert sha256_file(dest / f["path"]) == f["sha256"]
    assert not (dest / "model-f16.gguf").exists()  # the quantizations' source, not asked for
    assert {p.name: sha256_file(p) for p in adapter.iterdir()} == before  # the adapter untouched

    expected = greedy_transformers(tiny_model_dir, adapter)
    with LlamaServer(tmp_path / "engine", home=llama_home, threads=1) as server:
        answers = {}
        for kind in ("f32", "q8_0", "q4_k_m"):
            server.load(Preset(kind, dest / f"model-{kind}.gguf"))
            body = {"model": kind, "messages": TICKET, "max_tokens": 8, "temperature": 0}
            r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
            answers[kind] = r.json()["choices"][0]["message"]["content"]
    assert answers["f32"] == expected  # the merged GGUF is the adapter's model
    assert answers["q8_0"] and answers["q4_k_m"]  # the quantized ones load and answer


def test_a_corrupted_adapter_or_a_taken_folder_exports_nothing(
    llama_home: Path, tiny_model_dir: Path, adapters: dict[str, str], tmp_path: Path
) -> None:
    dest = tmp_path / "export"
    with pytest.raises(CheckpointError, match="fails its sha256"):
        export(adapters["corrupt"], tiny_model_dir, dest, ["gguf-q8_0"], home=llama_home)
    assert not dest.exists() and not (tmp_path / "export.partial").exists()
    with pytest.raises(ServingError, match="gguf-q5"):
        export(adapters["a"], tiny_model_dir, dest, ["gguf-q5"], home=llama_home)
    dest.mkdir()
    with pytest.raises(ServingError, match="exports never overwrite"):
        export(adapters["a"], tiny_model_dir, dest, ["merged"], home=llama_home)
