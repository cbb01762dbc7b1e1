"""``arkor-ops export ADAPTER --model DIR --out DIR --format F [...]``: merged weights and GGUF.

Exports the committed adapter at ``ADAPTER`` (``file://`` or ``s3://``; checked file by file
against its manifest) merged into the base model ``--model``: ``merged`` safetensors and GGUF
files (``gguf-f32``, ``gguf-f16``, ``gguf-bf16``, ``gguf-q8_0``, ``gguf-q4_k_m``), listed with
their sha256 in ``OUT/export.json``. ``OUT`` must not exist; a failed export leaves none. Prints
the files. Exit codes: 0 exported, 2 bad input or a failed step (the adapter is never touched).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from arkor_ops.errors import ArkorOpsError


def register(sub: Any) -> None:
    """Add ``export`` to the parser."""
    from arkor_ops.serving.export import FORMATS

    p = sub.add_parser("export", help="an adapter merged into its base: safetensors, GGUF")
    p.add_argument("adapter", help="a committed adapter (file:// or s3://)")
    p.add_argument("--model", required=True, type=Path, help="the base model's folder")
    p.add_argument("--out", required=True, type=Path, help="the folder to create")
    p.add_argument(
        "--format", action="append", required=True, choices=FORMATS, help="repeat for several"
    )
    p.add_argument("--vocab-pre", default=None, help="BPE pre-tokenizer llama.cpp lacks")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, printing each file."""
    from arkor_ops.serving.export import export

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"exporting {args.adapter} ({', '.join(args.format)}) …")
    try:
        record = export(args.adapter, args.model, args.out, args.format, vocab_pre=args.vocab_pre)
    except ArkorOpsError as exc:
        err.print(f"error: {exc}")
        return 2
    out = Console(highlight=False, soft_wrap=True)
    for f in record["files"]:
        out.print(f"{args.out / f['path']}  {f['size']} bytes  sha256:{f['sha256']}")
    return 0
