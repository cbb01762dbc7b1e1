"""Registered models: ``arkor-ops models list``, ``models show NAME``, ``models promote NAME V``.

They read the MLflow registry that the flows write (``MLFLOW_TRACKING_URI``; see
:mod:`arkor_ops.models`). ``promote`` is a person overriding the promotion gate: the version
gets the ``champion`` alias with ``arkor-ops.promoted_by=person:<user>`` (``$USER``, or
``--by``) and the reason given. Exit codes: 0 ok, 1 no such model or version, 2 the registry is
not configured or refused.
"""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from arkor_ops.errors import ModelNotFoundError, RegistryError
from arkor_ops.models import ModelInfo, describe_model, list_models, promote
from arkor_ops.registry import RegistrySettings

#: Lineage tags shown in ``show``'s table (all of them are in ``--json``).
SHOWN_LINEAGE = ("dataset_uri", "dataset_version", "job_id", "promoted_by")


def register(sub: Any) -> None:
    """Add ``models`` and its subcommands to the parser."""
    group = sub.add_parser("models", help="registered models: versions, champion, lineage")
    models = group.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    p = models.add_parser(
        "list", help="every registered model with its newest version and champion"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_list)
    p = models.add_parser("show", help="one model's versions, aliases, metrics and lineage")
    p.add_argument("name", help="registered model name")
    p.add_argument("--json", action="store_true", help="print JSON (every tag and metric)")
    p.set_defaults(func=run_show)
    p = models.add_parser(
        "promote", help="make a version the champion, overriding the gate (recorded as such)"
    )
    p.add_argument("name", help="registered model name")
    p.add_argument("version", help="the version to promote")
    p.add_argument("--reason", default="", help="why (recorded on the version)")
    p.add_argument("--by", help="who is promoting (default: the current user)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--endpoints",
        choices=["auto", "yes", "no"],
        default="auto",
        help="move the cluster's endpoints that follow the champion (auto: when "
        "ARKOR_BACKEND=kubernetes)",
    )
    p.set_defaults(func=run_promote)


def _run(body: Callable[[RegistrySettings], int]) -> int:
    err = Console(stderr=True, highlight=False)
    settings = RegistrySettings()
    if not settings.tracking_uri:
        err.print("[red]error:[/red] MLFLOW_TRACKING_URI is not set: which MLflow server to ask?")
        return 2
    try:
        return body(settings)
    except ModelNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        return 1
    except (RegistryError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True)
        return 2


def run_list(args: argparse.Namespace) -> int:
    """Print the registered models."""

    def body(settings: RegistrySettings) -> int:
        rows = list_models(settings)
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], indent=2))
            return 0
        table = Table(box=None, header_style="bold")
        for col in ("NAME", "VERSIONS", "LATEST", "CHAMPION", "UPDATED"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r.name,
                str(r.versions),
                r.latest_version or "-",
                r.champion or "-",
                r.updated_at or "-",
            )
        Console(highlight=False).print(table)
        return 0

    return _run(body)


def versions_table(model: ModelInfo) -> Table:
    """``show``'s table: one row per version."""
    table = Table(box=None, header_style="bold")
    for col in (
        "VERSION",
        "ALIASES",
        "TRAIN LOSS",
        *(c.upper().replace("_", " ") for c in SHOWN_LINEAGE),
    ):
        table.add_column(col, overflow="fold")
    for v in model.versions:
        loss = v.metrics.get("train_loss")
        lineage = v.lineage
        table.add_row(
            v.version,
            ",".join(v.aliases) or "-",
            "-" if loss is None else f"{loss:.4g}",
            *(lineage.get(k) or "-" for k in SHOWN_LINEAGE),
        )
    return table


def run_show(args: argparse.Namespace) -> int:
    """Print one model's versions."""

    def body(settings: RegistrySettings) -> int:
        model = describe_model(settings, args.name)
        if args.json:
            print(json.dumps(model.to_dict(), indent=2))
            return 0
        out = Console(highlight=False)
        out.print(
            f"[bold]{model.name}[/bold]  champion: v{model.champion}"
            if model.champion
            else f"[bold]{model.name}[/bold]  no champion yet"
        )
        out.print(versions_table(model))
        return 0

    return _run(body)


def run_promote(args: argparse.Namespace) -> int:
    """Give a version the ``champion`` alias, as a person."""

    def body(settings: RegistrySettings) -> int:
        by = f"person:{args.by or getpass.getuser()}"
        reason = args.reason or "promoted by hand (arkor-ops models promote)"
        done = promote(settings, args.name, args.version, reason=reason, by=by)
        if args.json:
            print(json.dumps(done.to_dict(), indent=2))
        elif not done.changed:
            Console(highlight=False).print(f"{done.name} v{done.version} is the champion already")
        else:
            was = f" (was v{done.previous})" if done.previous else ""
            Console(highlight=False).print(
                f"{done.name} v{done.version} is the champion{was}, promoted by {by}"
            )
        if done.changed:
            _move_endpoints(args, settings, done.name, done.version)
        return 0

    return _run(body)


def _move_endpoints(
    args: argparse.Namespace, registry: RegistrySettings, name: str, version: str
) -> None:
    """The cluster's endpoints that follow ``name``'s champion, moved to ``version``."""
    from arkor_ops.errors import ArkorOpsError
    from arkor_ops.settings import default_backend

    wanted = args.endpoints == "yes" or (
        args.endpoints == "auto" and default_backend("local") == "kubernetes"
    )
    if not wanted:
        return
    from arkor_ops.serving.cluster import move_followers
    from arkor_ops.settings import KubernetesSettings, read

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        outcomes = move_followers(read(KubernetesSettings), registry, name, version)
    except ArkorOpsError as exc:
        err.print(f"warning: no endpoint moved (the promotion stands): {exc}", markup=False)
        return
    for endpoint, outcome in outcomes.items():
        err.print(f"endpoint {endpoint}: {outcome}", markup=False)
