"""Exports of a committed adapter: merged weights and GGUF files, each with its sha256.

``export(adapter_uri, base_model, dest, formats)`` (``arkor-ops export``):

1. fetches the adapter and checks every file against its committed manifest (an uncommitted
   adapter or a file that fails its sha256 is refused; nothing is written);
2. merges it into the base model in a process of its own (:mod:`arkor_ops.worker.merge`:
   PEFT's ``merge_and_unload``, safetensors, the base's tokenizer and chat template);
3. converts the merged model with llama.cpp's ``convert_hf_to_gguf.py`` and quantizes it with
   ``llama-quantize`` for each GGUF format asked;
4. writes ``export.json`` last: each output file with its size and sha256, the adapter's URI and
   the sha256 of its manifest, the base model.

Everything is built in ``<dest>.partial`` and renamed to ``dest`` at the end, so a failed or
killed export leaves no ``dest``, and it never writes where the adapter is.

| format | what |
|---|---|
| ``merged`` | ``merged/``: safetensors in the base's dtype, with tokenizer and chat template |
| ``gguf-f32``, ``gguf-f16``, ``gguf-bf16`` | ``model-<type>.gguf``: the merged model, unquantized |
| ``gguf-q8_0``, ``gguf-q4_k_m`` | ``model-<type>.gguf``: quantized from the f16 GGUF |
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from arkor_ops.checkpoints import committed_adapter
from arkor_ops.errors import ServingError
from arkor_ops.serving.gguf import base_gguf
from arkor_ops.serving.llama_cpp import llama_cpp_home, quantize
from arkor_ops.storage import MANIFEST_NAME, join_uri, open_storage
from arkor_ops.worker.checkpoints import download_files, sha256_file

FORMATS = ("merged", "gguf-f32", "gguf-f16", "gguf-bf16", "gguf-q8_0", "gguf-q4_k_m")
_QUANTIZED = {"gguf-q8_0": "q8_0", "gguf-q4_k_m": "q4_k_m"}
EXPORT_MANIFEST = "export.json"


def check_formats(formats: list[str]) -> list[str]:
    """``formats`` without repeats, or :class:`ServingError` naming an unknown one."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ServingError(
            f"export format {', '.join(unknown) or '(none)'}: use one or more of "
            + ", ".join(FORMATS)
        )
    return list(dict.fromkeys(formats))


def _merge(base: Path, adapter: Path, out: Path) -> None:
    cmd = [sys.executable, "-m", "arkor_ops.worker.merge", str(base), str(adapter), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ServingError(f"merging the adapter into {base} failed:\n{tail}")


def export(
    adapter_uri: str,
    base_model: Path,
    dest: Path,
    formats: list[str],
    *,
    home: str | Path | None = None,
    vocab_pre: str | None = None,
) -> dict[str, Any]:
    """Export the committed adapter at ``adapter_uri`` as ``formats`` into ``dest``.

    Returns the content of ``dest/export.json``.

    Raises:
        CheckpointError: the adapter is not committed or a file fails its sha256.
        ServingError: ``dest`` exists, a format is unknown, or a merge, conversion or
            quantization failed (``dest`` is not created).
    """
    formats = check_formats(formats)
    if dest.exists():
        raise ServingError(f"{dest} exists: exports never overwrite; choose another folder")
    if not (base_model / "config.json").is_file():
        raise ServingError(f"base model {base_model}: no config.json there")
    llama = llama_cpp_home(home) if any(f.startswith("gguf-") for f in formats) else None
    adapter_uri = adapter_uri.rstrip("/")
    storage = open_storage(adapter_uri)
    manifest = committed_adapter(storage, adapter_uri, label="adapter")
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        adapter = download_files(
            storage, adapter_uri, manifest, work / "adapter", label=f"adapter {adapter_uri}"
        )
        merged = work / "merged"
        _merge(base_model, adapter, merged)
        outputs: list[Path] = []
        if "merged" in formats:
            outputs += sorted(p for p in merged.rglob("*") if p.is_file())
        if llama is not None:
            outputs += _gguf(llama, merged, work, formats, vocab_pre)
        if "merged" not in formats:
            shutil.rmtree(merged)
            outputs = [p for p in outputs if merged not in p.parents]
        shutil.rmtree(work / "adapter")
        record = {
            "adapter": adapter_uri,
            "adapter_manifest_sha256": hashlib.sha256(
                storage.get_bytes(join_uri(adapter_uri, MANIFEST_NAME))
            ).hexdigest(),
            "base_model": manifest.base_model,
            "base_model_dir": str(base_model),
            "formats": formats,
            "files": [
                {
                    "path": p.relative_to(work).as_posix(),
                    "size": p.stat().st_size,
                    "sha256": sha256_file(p),
                }
                for p in outputs
            ],
            "created_at": time.time(),
        }
        (work / EXPORT_MANIFEST).write_text(json.dumps(record, indent=1))
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def _gguf(
    home: Path, merged: Path, work: Path, formats: list[str], vocab_pre: str | None
) -> list[Path]:
    outputs = []
    wanted = {f.removeprefix("gguf-") for f in formats if f.startswith("gguf-")}
    float_types = [t for t in ("f32", "f16", "bf16") if t in wanted]
    needs_f16 = any(f in formats for f in _QUANTIZED)
    done: dict[str, Path] = {}
    for outtype in float_types + (["f16"] if needs_f16 and "f16" not in float_types else []):
        done[outtype] = base_gguf(
            home, merged, work / f"model-{outtype}.gguf", outtype=outtype, vocab_pre=vocab_pre
        )
    outputs += [done[t] for t in float_types]
    for fmt, kind in _QUANTIZED.items():
        if fmt in formats:
            outputs.append(quantize(home, done["f16"], work / f"model-{kind}.gguf", kind))
    if needs_f16 and "f16" not in float_types:
        done["f16"].unlink()
    return outputs
