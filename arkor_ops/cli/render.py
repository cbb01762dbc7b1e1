"""`arkor-ops render CONFIG`: the Kubernetes objects a run of CONFIG would create, as YAML.

For operators who review what reaches the cluster (and for checkov, which `make lint` runs on
it): the Job and its ConfigMap exactly as :class:`~arkor_ops.backends.kubernetes.KubernetesBackend`
builds them, with the ``ARKOR_K8S_*`` settings of this environment, then (with
``ARKOR_K8S_PREFLIGHT``, the default) the pre-flight's Job and ConfigMap that come first. The
Secrets are left out: they hold the run's credentials, and the Jobs only refer to them by name.
Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from arkor_ops.backends.kubernetes.manifests import build_preflight, build_run, job_name
from arkor_ops.cli.validate import load_or_report
from arkor_ops.settings import KubernetesSettings, SettingsError, read


def register(sub: Any) -> None:
    """Add the command of this module to the parser."""
    p = sub.add_parser("render", help="print the Jobs and ConfigMaps a run would create (YAML)")
    p.add_argument("config", type=Path, help="Python file exporting `trainer`, or .yaml/.yml/.json")
    p.add_argument("--name", help="the Job name (default: derived from the run name)")
    p.add_argument(
        "--storage-uri",
        default="s3://arkor-ops/runs",
        help="the runs' storage prefix (default: %(default)s)",
    )
    p.set_defaults(func=run_render)


def run_render(args: argparse.Namespace) -> int:
    """Print the run's Job and ConfigMap; exit 1 for an invalid config."""
    config = load_or_report(args.config)
    if isinstance(config, int):
        return config
    try:
        settings = read(KubernetesSettings, what="Kubernetes settings")
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name = args.name or job_name(config.name, "render")
    objects = build_run(config, settings, name=name, storage_uri=args.storage_uri)
    shown = [objects.job, objects.config_map]
    if settings.preflight:
        pre = build_preflight(objects, settings)
        shown = [pre.job, pre.config_map, *shown]
    yaml.safe_dump_all(shown, sys.stdout, sort_keys=False)
    return 0
