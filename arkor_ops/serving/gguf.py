"""GGUF files for llama.cpp: a base model and a LoRA adapter, converted by llama.cpp's converters.

Each conversion runs llama.cpp's own script (``convert_hf_to_gguf.py`` for a Hugging Face model
folder, ``convert_lora_to_gguf.py`` for a PEFT adapter) in a subprocess through
:mod:`arkor_ops.serving._convert`, writes beside its destination and renames into place: a
half-written GGUF is never at the destination. Quantized exports (``q8_0``, ``q4_k_m``) go
through ``llama-quantize`` (:func:`arkor_ops.serving.llama_cpp.quantize`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from arkor_ops.errors import ServingError

#: Float types the converters write directly.
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


def _convert(
    home: Path, script: str, args: list[str], dest: Path, *, vocab_pre: str | None, what: str
) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    cmd = [sys.executable, "-m", "arkor_ops.serving._convert"]
    if vocab_pre is not None:
        cmd += ["--vocab-pre", vocab_pre]
    cmd += [str(home), script, "--", *args, "--outfile", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ServingError(f"converting {what} to GGUF failed:\n{tail}")
    os.replace(tmp, dest)
    return dest


def _check_outtype(outtype: str) -> None:
    if outtype not in OUTTYPES:
        raise ServingError(f"GGUF type {outtype!r} is not one of {', '.join(OUTTYPES)}")


def base_gguf(
    home: Path,
    model_dir: Path,
    dest: Path,
    *,
    outtype: str = "f16",
    vocab_pre: str | None = None,
) -> Path:
    """Convert the Hugging Face model folder ``model_dir`` to the GGUF ``dest``."""
    _check_outtype(outtype)
    if not (model_dir / "config.json").is_file():
        raise ServingError(f"{model_dir} holds no config.json: not a Hugging Face model folder")
    args = [str(model_dir), "--outtype", outtype]
    return _convert(
        home, "convert_hf_to_gguf.py", args, dest, vocab_pre=vocab_pre, what=f"model {model_dir}"
    )


def adapter_gguf(
    home: Path,
    adapter_dir: Path,
    base_dir: Path,
    dest: Path,
    *,
    outtype: str = "f16",
) -> Path:
    """Convert the PEFT adapter in ``adapter_dir`` (trained on ``base_dir``) to the GGUF ``dest``.

    The converter reads the base model's ``config.json`` from ``base_dir`` (not its weights).
    """
    _check_outtype(outtype)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ServingError(f"{adapter_dir} holds no adapter_config.json: not a PEFT adapter")
    args = [str(adapter_dir), "--base", str(base_dir), "--outtype", outtype]
    what = f"adapter {adapter_dir}"
    return _convert(home, "convert_lora_to_gguf.py", args, dest, vocab_pre=None, what=what)
