"""``python -m arkor_ops.flows.dev`` (``arkor-ops dev``): a local Prefect server plus the flows.

Starts ``prefect server start`` (SQLite under ``--home``, UI included), waits until it is healthy,
prints the UI address, then serves the deployments of :mod:`.deploy` with the local backend,
or the Kubernetes backend when ``KUBECONFIG`` is set (``--backend`` overrides). Ctrl-C stops the
runner and then the server.

Prefect is imported only after the environment is set, because it reads its settings at import.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from arkor_ops.settings import KubeconfigSettings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (shared with ``arkor-ops dev``)."""
    p = argparse.ArgumentParser(prog="arkor-ops dev", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p.parse_args(argv)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the dev options to a parser."""
    p.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=4200, help="server port (default 4200)")
    p.add_argument(
        "--home",
        type=Path,
        default=Path.home() / ".arkor-ops" / "prefect",
        help="PREFECT_HOME: database and settings (default ~/.arkor-ops/prefect)",
    )
    p.add_argument("--backend", choices=("local", "kubernetes"), help="default: from KUBECONFIG")
    p.add_argument("--retrain-config", type=Path, help="trainer config of the retrain deployments")
    p.add_argument("--watch", action="append", default=[], help="dataset URI to watch (repeat)")
    p.add_argument("--cron", default=None, help="retrain-nightly schedule (default 0 3 * * *)")


def prepare_env(args: argparse.Namespace) -> dict[str, str]:
    """Set this process's environment for the server, the runner and the flow runs."""
    api = f"http://{args.host}:{args.port}/api"
    backend = args.backend or ("kubernetes" if KubeconfigSettings().kubeconfig else "local")
    env = {
        "PREFECT_HOME": str(args.home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "ARKOR_BACKEND": backend,
    }
    if args.retrain_config:
        env["ARKOR_RETRAIN_CONFIG"] = str(args.retrain_config.resolve())
    if args.watch:
        env["ARKOR_WATCH_DATASETS"] = ",".join(args.watch)
    if args.cron:
        env["ARKOR_RETRAIN_CRON"] = args.cron
    # Prefect reads its settings from this process's environment at import, and the runner and
    # the flow runs inherit it: the environment is set for them, not read as configuration
    os.environ.update(env)  # environment for Prefect and child processes, not configuration
    return env


def start_server(host: str, port: int, timeout_seconds: float = 90) -> subprocess.Popen[bytes]:
    """Start ``prefect server start`` and wait until ``/api/health`` answers."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # child env, not config
    env.update(
        PREFECT_SERVER_API_HOST=host,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_UI_API_URL=f"http://{host}:{port}/api",  # what the UI's JavaScript calls
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_seconds
    url = f"http://{host}:{port}/api/health"
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with code {proc.returncode}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return proc
            time.sleep(0.3)
    except BaseException:  # Ctrl-C while waiting: the server has its own session, stop it
        stop_server(proc)
        raise
    stop_server(proc)
    raise RuntimeError(f"prefect server did not answer at {url} within {timeout_seconds:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server (SIGTERM, then SIGKILL after 10 s)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server and serve the deployments until Ctrl-C (or SIGTERM).

    Returns:
        0 once stopped by Ctrl-C/SIGTERM while serving; 130 when interrupted while starting.
    """
    args = parse_args(argv)
    env = prepare_env(args)
    args.home.mkdir(parents=True, exist_ok=True)
    print(f"Starting the Prefect server (PREFECT_HOME={args.home}) …", flush=True)
    try:
        return _run(args, env)
    except KeyboardInterrupt:
        print("Interrupted while starting.", flush=True)
        return 130


def _run(args: argparse.Namespace, env: dict[str, str]) -> int:
    server = start_server(args.host, args.port)
    try:
        from prefect import serve

        from arkor_ops.flows.deploy import from_env

        deployments = from_env()
        ui = f"http://{args.host}:{args.port}"
        print(f"Prefect UI: {ui}", flush=True)
        print(f"API: {env['PREFECT_API_URL']}  (export PREFECT_API_URL to use it)", flush=True)
        print(f"Backend: {env['ARKOR_BACKEND']}", flush=True)
        print("Deployments: " + ", ".join(d.name for d in deployments), flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            serve(*deployments, print_starting_message=False)
    finally:
        # a second Ctrl-C must not interrupt the shutdown and leave the server behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_server(server)
        print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
