"""`arkor-ops start TRAINER_FILE [--backend local|kubernetes]`: start a run and follow it.

Loads the trainer the file exports, calls ``start()`` then ``wait()``, and shows a progress bar
(step, loss, ETA from ``max_steps``) read from the backend's ``describe()``. Ctrl-C asks whether
to cancel the run (``c``) or only stop waiting (``d``, detach: the run goes on); the answer is
read from stdin even when it is not a terminal, and end of input means detach.

Exit codes: ``0`` completed; ``1`` failed (or the backend failed); ``2`` bad input (missing
file, invalid config, unknown backend); ``130`` cancelled, aborted or interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from arkor_ops.abort import AbortError
from arkor_ops.backends import BACKEND_ENV, resolve_backend
from arkor_ops.cli.loader import EntryError, load_trainer
from arkor_ops.errors import ArkorOpsError, BackendError, ConfigError

EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_EXIT_BY_STATUS = {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "cancelled": 130}


def register(sub: Any) -> None:
    """Add ``start`` to the parser."""
    p = sub.add_parser("start", help="start a training run from a trainer file and follow it")
    p.add_argument("trainer_file", type=Path, help="Python file exporting `trainer`")
    p.add_argument(
        "--backend",
        choices=["local", "kubernetes"],
        help=f"where to run (overrides the trainer's backend and ${BACKEND_ENV})",
    )
    p.set_defaults(func=run_start)


class _ProgressPoller:
    """Polls ``backend.describe(job_id)`` in a thread and updates a rich progress bar."""

    def __init__(self, backend: Any, job_id: str, total: int | None, console: Console) -> None:
        self.backend, self.job_id = backend, job_id
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.fields[total_text]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "starting", total=total, loss="-", total_text=total or "?"
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arkor-progress", daemon=True)

    def __enter__(self) -> _ProgressPoller:
        self.progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.progress.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        last_line: tuple[int | None, float] = (None, 0.0)  # step and time of the last plain line
        try:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # progress is best effort
                    desc = loop.run_until_complete(self.backend.describe(self.job_id))
                    loss = "-" if desc.loss is None else f"{desc.loss:.4f}"
                    label = desc.phase or desc.job.status
                    self.progress.update(
                        self.task, completed=desc.step or 0, loss=loss, description=label
                    )
                    if not self.progress.console.is_terminal:
                        last_line = self._plain_line(last_line, label, desc.step, loss)
                self._stop.wait(0.5)
        finally:
            loop.close()

    def _plain_line(
        self, last: tuple[int | None, float], label: str, step: int | None, loss: str
    ) -> tuple[int | None, float]:
        """Without a terminal (CI logs, pipes) the bar cannot redraw: print a line instead,
        when the step changed and at most every 10 seconds."""
        now = time.monotonic()
        if step == last[0] or now - last[1] < 10:
            return last
        task = self.progress.tasks[0]
        eta = task.time_remaining
        eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
        total = task.fields["total_text"]
        self.progress.console.print(f"{label}: step {step or 0}/{total}, loss {loss}{eta_text}")
        return step, now


def _ask_cancel(console: Console) -> bool:
    """Ask whether to cancel the run; True for cancel, False for detach."""
    console.print(
        "\n[bold yellow]Interrupted.[/] Cancel the run [bold](c)[/] or stop waiting and "
        "leave it running [bold](d)[/]? [c/d] ",
        end="",
    )
    try:
        answer = sys.stdin.readline()
    except (KeyboardInterrupt, OSError):
        answer = ""
    return answer.strip().lower().startswith("c")


def _report(console: Console, result: Any) -> int:
    job = result.job
    console.print(f"job [bold]{job.id}[/]: [bold]{job.status}[/]")
    if job.error:
        console.print(f"error: {job.error}")
    for artifact in result.artifacts:
        if artifact.kind == "final":
            console.print(f"adapter: {artifact.uri}")
    metrics = result.metrics
    if metrics is not None and metrics.total_steps is not None:
        console.print(
            f"steps: {metrics.total_steps}, final loss: {metrics.final_loss}, "
            f"time: {metrics.total_time or 0:.1f} s"
        )
    return _EXIT_BY_STATUS.get(job.status, EXIT_FAILED)


def _load(args: argparse.Namespace, err: Console) -> Any:
    if args.backend:
        os.environ[BACKEND_ENV] = args.backend  # seen by a file that resolves its own backend
    try:
        trainer = load_trainer(args.trainer_file)
        if args.backend:
            inner = getattr(trainer, "async_trainer", trainer)
            inner._backend = resolve_backend(args.backend)
        _ = trainer.backend  # resolve it now: an unknown or misconfigured backend is bad input
    except (EntryError, ConfigError, BackendError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return None
    return trainer


def _interrupted(trainer: Any, job_id: str, out: Console, err: Console) -> int:
    if not _ask_cancel(err):
        out.print(f"stopped waiting; job [bold]{job_id}[/] keeps running")
        return EXIT_INTERRUPTED
    err.print(f"cancelling job {job_id} ...")
    try:
        trainer.cancel()
    except ArkorOpsError as exc:
        err.print(f"[red]cancel failed:[/] {exc}")
        return EXIT_FAILED
    out.print(f"job [bold]{job_id}[/]: [bold]cancelled[/]")
    return EXIT_INTERRUPTED


def _start(trainer: Any, out: Console, err: Console) -> str | int:
    """``trainer.start()``: the job id, or the exit code when it did not start."""
    try:
        job_id: str = trainer.start().job_id
    except KeyboardInterrupt:
        if trainer.job_id is None:  # the backend removed what it had begun
            err.print("interrupted before the run started; nothing is running")
            return EXIT_INTERRUPTED
        return _interrupted(trainer, trainer.job_id, out, err)
    except ArkorOpsError as exc:
        err.print(f"[red]could not start the run:[/] {exc}")
        return EXIT_FAILED
    return job_id


def run_start(args: argparse.Namespace) -> int:
    """Start the run in ``args.trainer_file`` and follow it; returns the exit code."""
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    trainer = _load(args, err)
    if trainer is None:
        return EXIT_BAD_INPUT
    started = _start(trainer, out, err)
    if isinstance(started, int):
        return started
    job_id = started
    try:
        out.print(f"started job [bold]{job_id}[/] ({trainer.config.name})")
        with _ProgressPoller(trainer.backend, job_id, trainer.config.max_steps, err):
            result = trainer.wait()
    except KeyboardInterrupt:
        return _interrupted(trainer, job_id, out, err)
    except AbortError as exc:
        out.print(f"stopped waiting ({exc}); job [bold]{job_id}[/] keeps running")
        return EXIT_INTERRUPTED
    except ArkorOpsError as exc:
        err.print(f"[red]error while following job {job_id}:[/] {exc}")
        return EXIT_FAILED
    return _report(out, result)
