"""Run one of llama.cpp's converters (``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``).

``python -m arkor_ops.serving._convert [--vocab-pre NAME] HOME SCRIPT -- ARGS...`` runs
``HOME/SCRIPT`` as its own ``__main__`` with ``ARGS``, its ``conversion`` package importable.
A subprocess, so the converter's torch and its memory go when it exits.

``--vocab-pre`` names the BPE pre-tokenizer of a tokenizer the converter cannot identify: it
recognizes a byte-level BPE tokenizer by hashing what the tokenizer makes of a fixed text, so a
tokenizer trained for a model of one's own (the tests' tiny model) is unknown to it. The name is
one llama.cpp knows (``gpt-2`` for the byte-level split GPT-2 uses) and is written to the GGUF as
``tokenizer.ggml.pre``; without it an unknown tokenizer fails, as it does with the script itself.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Parse our arguments, then hand the rest to the converter."""
    parser = argparse.ArgumentParser(prog="python -m arkor_ops.serving._convert")
    parser.add_argument("home", type=Path, help="the llama.cpp build")
    parser.add_argument("script", choices=["convert_hf_to_gguf.py", "convert_lora_to_gguf.py"])
    parser.add_argument("--vocab-pre", default=None, help="BPE pre-tokenizer name to write")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the converter's own arguments")
    ns = parser.parse_args(argv)
    rest = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    sys.path.insert(0, str(ns.home))
    if ns.vocab_pre is not None:
        from conversion.base import TextModel  # type: ignore[import-not-found]  # llama.cpp's

        name = ns.vocab_pre
        TextModel.get_vocab_base_pre = lambda self, tokenizer: name  # type: ignore[method-assign]
    script = ns.home / ns.script
    sys.argv = [str(script), *rest]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
