"""`arkor-ops settings`: the environment variables of each settings group, as Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from arkor_ops.settings.docs import NAMES, render, update_docs


def register(sub: Any) -> None:
    """Add the command of this module to the parser."""
    p = sub.add_parser(
        "settings", help="the environment variables of each settings group (Markdown tables)"
    )
    p.add_argument("group", nargs="?", choices=NAMES, help="one group; default: all")
    p.add_argument(
        "--write-docs",
        nargs="?",
        const=Path("docs"),
        type=Path,
        metavar="DIR",
        help="rewrite the tables between <!-- settings:GROUP --> markers in DIR/*.md "
        "(default DIR: docs)",
    )
    p.set_defaults(func=run_settings)


def run_settings(args: argparse.Namespace) -> int:
    """Print the tables, or rewrite them in the docs; exit 1 when the docs folder is missing."""
    if args.write_docs is not None:
        if not args.write_docs.is_dir():
            print(f"error: {args.write_docs} is not a folder", file=sys.stderr)
            return 1
        for path in update_docs(args.write_docs):
            print(f"updated {path}")
        return 0
    for name in [args.group] if args.group else NAMES:
        print(f"## {name}\n\n{render(name)}")
    return 0
