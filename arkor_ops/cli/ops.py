"""Operator commands: ``arkor-ops list``, ``status JOB``, ``logs JOB [-f]``, ``cancel JOB``,
``checkpoints JOB``.

They act on runs that already exist, through the :class:`~arkor_ops.backends.base.Backend`
interface. The backend is ``--backend``, else ``$ARKOR_BACKEND``, else ``kubernetes`` (these
are the commands an operator runs against the cluster), with ``--namespace`` as its override;
each command closes it when done. Exit codes: 0 ok, 1 the run failed or was not found,
2 the backend refused (permissions, configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from arkor_ops.backends import resolve_backend
from arkor_ops.backends.base import Backend, JobDescription
from arkor_ops.checkpoints import CheckpointInfo, list_checkpoints
from arkor_ops.errors import ArkorOpsError, JobNotFoundError
from arkor_ops.follow import follow as follow_frames
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.settings import BACKEND_ENV, default_backend

#: ``logs -f``: reconnect 1 s after any close or retryable failure, for as long as it takes.
_FOLLOW_POLICY = ReconnectPolicy(base_delay_seconds=1.0, max_delay_seconds=1.0, jitter=0.0)


def backend_options() -> argparse.ArgumentParser:
    """``--backend`` and ``--namespace``: a parent parser for every command that acts on runs."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=["local", "kubernetes"],
        help=f"backend of the runs (default: ${BACKEND_ENV}, else kubernetes)",
    )
    common.add_argument("-n", "--namespace", help="Kubernetes namespace (ARKOR_K8S_NAMESPACE)")
    return common


def register(sub: Any) -> None:
    """Add the operator commands to the parser."""
    common = backend_options()
    p = sub.add_parser("list", parents=[common], help="runs with status, step, loss and age")
    p.set_defaults(func=run_list)
    p = sub.add_parser("status", parents=[common], help="one run's status and phase")
    p.add_argument("job", help="job id (the Kubernetes Job name)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_status)
    p = sub.add_parser("logs", parents=[common], help="a run's event stream, for a terminal")
    p.add_argument("job", help="job id")
    p.add_argument("-f", "--follow", action="store_true", help="follow until the run ends")
    p.set_defaults(func=run_logs)
    p = sub.add_parser(
        "checkpoints", parents=[common], help="a run's committed checkpoints and final adapter"
    )
    p.add_argument("job", help="job id")
    p.add_argument("--json", action="store_true", help="print JSON (with each one's init_adapter)")
    p.set_defaults(func=run_checkpoints)
    p = sub.add_parser("cancel", parents=[common], help="cancel a run; returns once it stopped")
    p.add_argument("job", help="job id")
    p.set_defaults(func=run_cancel)


def command_backend(args: argparse.Namespace) -> Backend:
    """The backend a command parsed with :func:`backend_options` acts on (close it)."""
    name = args.backend or default_backend("kubernetes")
    namespace = getattr(args, "namespace", None)
    kubernetes = name.strip().lower() == "kubernetes"
    return resolve_backend(name, **({"namespace": namespace} if namespace and kubernetes else {}))


def _run(args: argparse.Namespace, body: Callable[[Backend], Awaitable[int]]) -> int:
    """Run ``body`` with the command's backend, closed afterwards; the exit code."""

    async def main() -> int:
        async with command_backend(args) as backend:
            return await body(backend)

    err = Console(stderr=True)
    try:
        code: int = asyncio.run(main())
    except JobNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 1
    except ArkorOpsError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def age(created_at: str | None, now: datetime | None = None) -> str:
    """``kubectl``-style age: ``42s``, ``5m``, ``3h``, ``2d``."""
    if not created_at:
        return "-"
    try:
        created = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - created).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def jobs_table(rows: list[JobDescription]) -> Table:
    """The ``list`` table."""
    table = Table(box=None, header_style="bold")
    for col in ("JOB", "NAME", "STATUS", "PHASE", "STEP", "LOSS", "AGE"):
        table.add_column(col, justify="right" if col in ("STEP", "LOSS") else "left")
    for d in rows:
        table.add_row(
            d.job.id,
            d.job.name,
            d.job.status,
            d.phase or "-",
            "-" if d.step is None else str(d.step),
            "-" if d.loss is None else f"{d.loss:.4f}",
            age(d.job.created_at),
        )
    return table


def run_list(args: argparse.Namespace) -> int:
    """Print the runs of the namespace."""

    async def body(backend: Backend) -> int:
        rows = await backend.list_jobs()
        Console().print(jobs_table(rows))
        return 0

    return _run(args, body)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def checkpoints_table(rows: list[CheckpointInfo]) -> Table:
    """The ``checkpoints`` table."""
    table = Table(box=None, header_style="bold")
    for col in ("STEP", "KIND", "LOSS", "EVAL LOSS", "SIZE", "AGE"):
        table.add_column(col, justify="right" if col in ("STEP", "LOSS", "EVAL LOSS") else "left")
    table.add_column("URI", overflow="fold")  # a URI is copied whole, never cut short
    for c in rows:
        table.add_row(
            str(c.step),
            f"{c.kind} (best)" if c.best else c.kind,
            "-" if c.train_loss is None else f"{c.train_loss:.4f}",
            "-" if c.eval_loss is None else f"{c.eval_loss:.4f}",
            _size(c.size),
            age(c.created_at),
            c.uri,
        )
    return table


def run_checkpoints(args: argparse.Namespace) -> int:
    """Print a run's committed checkpoints (``--json``: with the ref another run starts from)."""

    async def body(backend: Backend) -> int:
        rows = await list_checkpoints(backend, args.job)
        if args.json:
            data = [{**c.model_dump(mode="json", by_alias=True), "ref": c.ref()} for c in rows]
            print(json.dumps(data, indent=2))
        elif rows:
            Console().print(checkpoints_table(rows))
        else:
            Console(stderr=True).print(f"{args.job}: no committed checkpoint yet")
        return 0

    return _run(args, body)


def run_status(args: argparse.Namespace) -> int:
    """Print one run's status; exit 1 when it failed."""

    async def body(backend: Backend) -> int:
        d = await backend.describe(args.job)
        if args.json:
            print(d.model_dump_json(indent=2))
        else:
            out = Console(highlight=False)
            out.print(f"[bold]{d.job.id}[/bold] ({d.job.name}): {d.job.status}")
            for label, value in (
                ("phase", d.phase),
                ("message", d.message),
                ("step", d.step),
                ("loss", d.loss),
                ("error", d.job.error),
                ("created", d.job.created_at),
            ):
                if value is not None:
                    out.print(f"  {label:8} {value}", markup=False)
        return 1 if d.job.status == "failed" else 0

    return _run(args, body)


def _log_line(data: dict[str, Any]) -> str:
    parts = [f"step {data.get('step')}"]
    for key, label in (("loss", "loss"), ("learningRate", "lr"), ("epoch", "epoch")):
        if data.get(key) is not None:
            parts.append(f"{label} {data[key]:.4g}")
    return "  ".join(parts)


def _phase_line(data: dict[str, Any]) -> str:
    hint = f" (hint: {data['hint']})" if data.get("hint") else ""
    return f"[{data.get('phase')}] {data.get('message') or ''}{hint}"


_RENDER: dict[str, Callable[[dict[str, Any]], str]] = {
    "training.log": _log_line,
    "job.phase": _phase_line,
    "training.started": lambda d: "training started",
    "training.resumed": lambda d: (
        f"resumed from step {d.get('step')} (attempt {d.get('attempt')}): {d.get('reason')}"
    ),
    "checkpoint.saved": lambda d: f"checkpoint at step {d.get('step')}",
    "training.failed": lambda d: f"FAILED: {d.get('error')}",
    "training.cancelled": lambda d: f"cancelled at step {d.get('step')}",
    "training.completed": lambda d: (
        "completed: " + ", ".join(a.get("uri", "") for a in d.get("artifacts") or [])
    ),
}


def render(data: dict[str, Any]) -> str:
    """One event as a terminal line, e.g. ``12:00:01 step 3  loss 1.234``."""
    kind = str(data.get("type", "?"))
    stamp = str(data.get("timestamp", ""))[11:19]
    text = _RENDER[kind](data) if kind in _RENDER else kind
    return f"{stamp} {text}"


async def follow(
    backend: Backend,
    job_id: str,
    *,
    follow: bool,
    out: Console,
    idle_seconds: float = 1.5,
    first_seconds: float = 30.0,
) -> int:
    """Print the run's events; with ``follow``, reconnect until ``end``.

    Without ``follow``, print the events written so far: up to the last event id ``describe``
    reports (a run that logs often never goes idle), else until the stream is idle.

    Returns:
        0, or 1 when the run failed.
    """
    status = 0
    frames = follow_frames(
        lambda after: backend.events(job_id, after),
        upto=None if follow else await _last_event_id(backend, job_id),
        # Not following: wait for the first frame, then stop once the stream is idle.
        first_frame_seconds=None if follow else first_seconds,
        idle_seconds=None if follow else idle_seconds,
        policy=_FOLLOW_POLICY if follow else None,
    )
    async with contextlib.aclosing(frames):
        async for frame in frames:
            if frame.is_end or not frame.data:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(frame.data)
                status = 1 if data.get("type") == "training.failed" else status
                out.print(render(data), markup=False, highlight=False)
    return status


async def _last_event_id(backend: Backend, job_id: str) -> int | None:
    """The id of the run's last event as ``describe`` sees it; None when it cannot tell."""
    try:
        return (await backend.describe(job_id)).last_event_id
    except JobNotFoundError:
        return None  # the stream says so in its own words


def run_logs(args: argparse.Namespace) -> int:
    """Print the run's events (``-f``: until it ends)."""

    async def body(backend: Backend) -> int:
        return await follow(backend, args.job, follow=args.follow, out=Console())

    return _run(args, body)


def run_cancel(args: argparse.Namespace) -> int:
    """Cancel a run and wait until it stopped."""

    async def body(backend: Backend) -> int:
        await backend.cancel(args.job)
        Console(highlight=False).print(f"{args.job}: cancelled")
        return 0

    return _run(args, body)
