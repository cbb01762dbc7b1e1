"""Merge a LoRA adapter into its base model: ``python -m arkor_ops.worker.merge BASE ADAPTER OUT``.

Loads the base model (its saved dtype), applies the PEFT adapter, ``merge_and_unload()`` and
saves the merged weights as safetensors with the base model's tokenizer, chat template and
generation config, into ``OUT`` (created; must not exist). A process of its own, run by
:mod:`arkor_ops.serving.export`, so torch and its memory go when it exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def merge(base: Path, adapter: Path, out: Path, dtype: str = "auto") -> Path:
    """Save ``base`` with ``adapter`` merged in to ``out``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out.mkdir(parents=True)
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def main() -> None:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"]
    )
    args = parser.parse_args()
    merge(args.base, args.adapter, args.out, args.dtype)


if __name__ == "__main__":
    main()
