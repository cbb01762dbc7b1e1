"""`arkor-ops dev`: a local Prefect server with its UI, serving the arkor-ops deployments.

The work happens in ``python -m arkor_ops.flows.dev`` (a child process), because the core package
never imports Prefect. Ctrl-C reaches both processes; this one waits for the child to stop cleanly
and exits with its code: 0 after Ctrl-C while serving, 130 when interrupted while starting. SIGTERM
sent to this process alone is passed on to the child.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
from typing import Any


def register(sub: Any) -> None:
    """Add the ``dev`` command to the parser."""
    p = sub.add_parser(
        "dev",
        help="start a local Prefect server + UI and serve the deployments",
        description="Start a local Prefect server with its UI and serve the fine-tune, "
        "retrain, dataset-watcher and reaper deployments (local backend, or the cluster "
        "given by KUBECONFIG). Ctrl-C stops everything.",
    )
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4200, help="server port (default 4200)")
    p.add_argument("--home", help="PREFECT_HOME (default ~/.arkor-ops/prefect)")
    p.add_argument("--backend", choices=("local", "kubernetes"), help="default: from KUBECONFIG")
    p.add_argument("--retrain-config", help="trainer config (YAML/JSON) of the retrain runs")
    p.add_argument("--watch", action="append", default=[], help="dataset URI to watch (repeat)")
    p.add_argument("--cron", help="retrain-nightly schedule (default 0 3 * * *)")
    p.set_defaults(func=run_dev)


def child_argv(args: argparse.Namespace) -> list[str]:
    """The ``python -m arkor_ops.flows.dev`` command line for these options."""
    argv = [
        sys.executable,
        "-m",
        "arkor_ops.flows.dev",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    for flag in ("home", "backend", "retrain_config", "cron"):
        value = getattr(args, flag)
        if value:
            argv += ["--" + flag.replace("_", "-"), str(value)]
    for uri in args.watch:
        argv += ["--watch", uri]
    return argv


def run_dev(args: argparse.Namespace) -> int:
    """Run ``python -m arkor_ops.flows.dev`` until it exits or Ctrl-C is pressed."""
    if importlib.util.find_spec("prefect") is None:
        hint = "pip install 'arkor-ops[flows]'"
        print(f"error: `arkor-ops dev` needs Prefect: {hint}", file=sys.stderr)
        return 2
    proc = subprocess.Popen(child_argv(args))
    # SIGTERM (systemd, `timeout`, a test harness) goes to this process only: pass it on, so
    # the child stops its runner and the server instead of being orphaned with them.
    signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT and is shutting down
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
