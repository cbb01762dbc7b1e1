"""The `arkor-ops` command.

Each command group lives in its own module with a ``register(subparsers)`` function:

| module | commands |
|---|---|
| ``validate`` | ``validate CONFIG``, ``schema`` |
| ``render`` | ``render CONFIG`` (the Job and ConfigMap a run would create) |
| ``init`` | ``init [DIR] [--template NAME]`` (scaffold a project: triage, translate or redaction) |
| ``start`` | ``start TRAINER_FILE`` |
| ``ops`` | ``list``, ``status JOB``, ``logs JOB [-f]``, ``cancel JOB`` |
| ``studio`` | ``studio`` (local web app: runs, loss chart, checkpoints, playground, cancel) |
| ``dev`` | ``dev`` (local Prefect server + deployments) |
| ``export`` | ``export ADAPTER --model DIR --out DIR --format F`` (merged weights, GGUF) |
| ``serve`` | ``serve NAME --model DIR [--adapter URI]`` (a local OpenAI-compatible endpoint) |
| ``endpoints`` | ``endpoints create|list|show|delete|target|keys`` (endpoints on the cluster) |
| ``models`` | ``models list``, ``models show NAME``, ``models promote NAME VERSION`` (MLflow) |
| ``settings`` | ``settings [GROUP] [--write-docs [DIR]]`` (the environment tables) |
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from arkor_ops import __version__

COMMAND_MODULES = (
    "init",
    "validate",
    "render",
    "start",
    "ops",
    "studio",
    "dev",
    "serve",
    "endpoints",
    "export",
    "models",
    "settings",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every command group registered."""
    parser = argparse.ArgumentParser(
        prog="arkor-ops",
        description="LoRA fine-tuning runs on your own Kubernetes cluster, Arkor-style.",
    )
    parser.add_argument("--version", action="version", version=f"arkor-ops {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"arkor_ops.cli.{name}") is None:
            continue  # command group not built yet
        module = importlib.import_module(f"arkor_ops.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
