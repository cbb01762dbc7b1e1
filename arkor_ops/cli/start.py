"""`arkor-ops start TRAINER_FILE [--backend local|kubernetes] [--result-file PATH]`: start a run
and follow it.

Loads the trainer the file exports, calls ``start()`` then ``wait()``, and shows a progress bar
(step, loss, ETA from ``max_steps``) fed by the run's own callbacks, from the stream ``wait()``
reads (no polling). Ctrl-C asks whether to cancel the run (``c``) or only stop waiting (``d``,
detach: the run goes on); the answer is read from stdin even when it is not a terminal, and end
of input means detach.

Exit codes: ``0`` completed; ``1`` failed (or the backend failed); ``2`` bad input (missing
file, invalid config, unknown backend); ``130`` cancelled, aborted or interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from arkor_ops.abort import AbortError
from arkor_ops.backends import BACKEND_ENV, BackendSlot
from arkor_ops.errors import ArkorOpsError, BackendError, ConfigError
from arkor_ops.loader import EntryError, load_trainer
from arkor_ops.trainer import Trainer

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
    p.add_argument(
        "--result-file",
        type=Path,
        help="write the run's result as JSON here when it ends ({job, artifacts, metrics}, "
        "camelCase; written whole or not at all): for scripts",
    )
    p.set_defaults(func=run_start)


class _ProgressView:
    """A rich progress bar fed by the trainer's own callbacks (``trainer.observing``): the
    stream ``wait()`` already reads drives it, with no polling of the backend."""

    def __init__(self, trainer: Any, console: Console) -> None:
        self.trainer = trainer
        total = trainer.config.max_steps
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
        self._label = "starting"
        self._last_line: tuple[int | None, float] = (None, 0.0)  # step, time of the last line
        self._observing = trainer.observing(
            on_started=self._on_started,
            on_resumed=self._on_started,
            on_phase=self._on_phase,
            on_log=self._on_log,
        )

    def __enter__(self) -> _ProgressView:
        self.progress.start()
        self._observing.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._observing.__exit__(None, None, None)
        self.progress.stop()

    def _on_started(self, ctx: Any) -> None:
        self._label = "running"
        self.progress.update(self.task, description=self._label)

    def _on_phase(self, ctx: Any) -> None:
        self._label = ctx.phase
        self.progress.update(self.task, description=self._label)
        if not self.progress.console.is_terminal:
            self.progress.console.print(f"{ctx.phase}: {ctx.message or ctx.reason or ''}".strip())

    def _on_log(self, ctx: Any) -> None:
        if ctx.loss is None:  # an eval-only line: keep the training loss shown
            self.progress.update(self.task, completed=ctx.step)
            return
        loss = f"{ctx.loss:.4f}"
        self.progress.update(self.task, completed=ctx.step, loss=loss, description=self._label)
        if not self.progress.console.is_terminal:
            self._plain_line(ctx.step, loss)

    def _plain_line(self, step: int, loss: str) -> None:
        """Without a terminal (CI logs, pipes) the bar cannot redraw: print a line instead,
        when the step changed and at most every 10 seconds."""
        now = time.monotonic()
        last_step, last_time = self._last_line
        if step == last_step or now - last_time < 10:
            return
        task = self.progress.tasks[0]
        eta = task.time_remaining
        eta_text = f", ETA {eta:.0f}s" if eta is not None else ""
        total = task.fields["total_text"]
        self.progress.console.print(f"{self._label}: step {step}/{total}, loss {loss}{eta_text}")
        self._last_line = (step, now)


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


def _write_result(path: Path, result: Any) -> None:
    """The result as JSON at ``path``, replaced atomically (a reader never sees half of it)."""
    data = {
        "job": result.job.model_dump(mode="json", by_alias=True),
        "artifacts": [a.model_dump(mode="json", by_alias=True) for a in result.artifacts],
        "metrics": None
        if result.metrics is None
        else result.metrics.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _load(args: argparse.Namespace, err: Console) -> Trainer | None:
    if args.backend:
        # the user's trainer file may resolve its own backend: it (and its child processes)
        # sees the --backend choice as $ARKOR_BACKEND
        os.environ[BACKEND_ENV] = args.backend  # set for the trainer file, not config read here
    try:
        trainer = load_trainer(args.trainer_file)
        if not isinstance(trainer, Trainer):
            raise EntryError(
                f"{args.trainer_file}: `arkor-ops start` runs a trainer made with "
                f"arkor_ops.create_trainer(...), not a {type(trainer).__name__}"
            )
    except (EntryError, ConfigError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return None
    try:
        if args.backend:  # the trainer resolves it (from the variable above) and closes it
            trainer.async_trainer._backend = BackendSlot()
        _ = trainer.backend  # resolve it now: an unknown or misconfigured backend is bad input
    except BackendError as exc:
        trainer.close()
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
    with trainer:
        return _start_and_follow(args, trainer, out, err)


def _start_and_follow(args: argparse.Namespace, trainer: Any, out: Console, err: Console) -> int:
    started = _start(trainer, out, err)
    if isinstance(started, int):
        return started
    job_id = started
    try:
        out.print(f"started job [bold]{job_id}[/] ({trainer.config.name})")
        with _ProgressView(trainer, err):
            result = trainer.wait()
    except KeyboardInterrupt:
        return _interrupted(trainer, job_id, out, err)
    except AbortError as exc:
        out.print(f"stopped waiting ({exc}); job [bold]{job_id}[/] keeps running")
        return EXIT_INTERRUPTED
    except ArkorOpsError as exc:
        err.print(f"[red]error while following job {job_id}:[/] {exc}")
        return EXIT_FAILED
    if args.result_file is not None:
        _write_result(args.result_file, result)
    return _report(out, result)
