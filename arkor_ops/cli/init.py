"""`arkor-ops init [DIR] [--template triage|translate|redaction]`: scaffold a project.

Writes a ready-to-run project into ``DIR`` (default: the current folder; made if missing), as
``arkor init`` does: a trainer file whose ``on_checkpoint`` asks each checkpoint for a strict
JSON-schema answer with ``ctx.infer()``, a bundled chat dataset (``data/train.jsonl`` and a
held-out ``data/test.jsonl``), a README, a ``.gitignore`` and a ``prefect.yaml`` with a
deployment of the ``fine_tune`` flow.

It never overwrites: a file that already exists is kept as it is (whatever its content) and
reported as ``kept``; each new one is reported as ``created``, one line a file. The templates
are package data under ``arkor_ops/templates/<name>/`` (``gitignore`` there is written as
``.gitignore``).

Exit codes: ``0`` done; ``2`` bad input (unknown template, ``DIR`` is a file, a path in the way).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from arkor_ops.errors import ArkorOpsError

TEMPLATES = ("triage", "translate", "redaction")
DEFAULT_TEMPLATE = "triage"

#: What each template writes: the path in the project, the file in the template folder.
FILES = (
    ("trainer.py", "trainer.py"),
    ("README.md", "README.md"),
    (".gitignore", "gitignore"),
    ("prefect.yaml", "prefect.yaml"),
    ("data/train.jsonl", "data/train.jsonl"),
    ("data/test.jsonl", "data/test.jsonl"),
)

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class InitError(ArkorOpsError):
    """The project cannot be scaffolded as asked (the message says why)."""


def register(sub: Any) -> None:
    """Add ``init`` to the parser."""
    p = sub.add_parser("init", help="scaffold a project from a template (never overwrites)")
    p.add_argument(
        "dir", nargs="?", type=Path, default=Path("."), help="project folder (default: .)"
    )
    p.add_argument(
        "--template",
        default=DEFAULT_TEMPLATE,
        metavar="NAME",
        help=f"one of {', '.join(TEMPLATES)} (default: {DEFAULT_TEMPLATE})",
    )
    p.set_defaults(func=run_init)


def template_root(name: str) -> Traversable:
    """The folder of template ``name`` inside the installed package.

    Raises:
        InitError: there is no such template.
    """
    if name not in TEMPLATES:
        raise InitError(f"unknown template {name!r}: choose one of {', '.join(TEMPLATES)}")
    return resources.files("arkor_ops").joinpath("templates", name)


def scaffold(target: Path, template: str) -> list[tuple[str, str]]:
    """Write template ``template`` into ``target``, keeping every file already there.

    Args:
        target: the project folder; made (with its parents) if missing.
        template: one of :data:`TEMPLATES`.

    Returns:
        ``(status, path)`` for each file, in order: ``created`` or ``kept``.

    Raises:
        InitError: unknown template, ``target`` is not a folder, a path in the way, or a
            file that cannot be written.
    """
    root = template_root(template)  # before any file work
    if target.exists() and not target.is_dir():
        raise InitError(f"{target} exists and is not a folder")
    for relative, _ in FILES:  # before any file work too: nothing is half written
        for parent in (target / relative).parents:
            if parent == target or target not in parent.parents:
                break
            if parent.exists() and not parent.is_dir():
                raise InitError(f"cannot write {target / relative}: {parent} is not a folder")
    report: list[tuple[str, str]] = []
    for relative, source in FILES:
        path = target / relative
        if path.exists() or path.is_symlink():
            report.append(("kept", relative))
            continue
        data = root.joinpath(*source.split("/")).read_bytes()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as out:  # exclusive: never replaces a file made meanwhile
                out.write(data)
        except FileExistsError:
            report.append(("kept", relative))
            continue
        except OSError as exc:  # permissions, a full disk: say which file
            raise InitError(f"cannot write {path}: {exc.strerror or exc}") from exc
        report.append(("created", relative))
    return report


def run_init(args: argparse.Namespace) -> int:
    """Scaffold ``args.dir`` from ``args.template``; returns the exit code."""
    try:
        report = scaffold(args.dir, args.template)
    except InitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for status, relative in report:
        print(f"{status:<8} {relative}")
    trainer = args.dir / "trainer.py"
    print(f"\nnext: arkor-ops start {trainer} --backend local")
    return EXIT_OK
