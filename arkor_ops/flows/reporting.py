"""Mirror a training run's events into the flow run: log lines and three artifacts.

:class:`RunReporter` supplies the trainer callbacks used by ``wait_for_training``. The flow run
page shows exactly three artifacts per run, one card each, created when the run is followed and
then updated in place (``PATCH /artifacts/{id}``), never versioned: the run page lists every
version of a keyed artifact as a card of its own.

* ``{job}-progress``: a progress artifact (``step / max_steps``, 100 % when the run completes);
  its description says the step and the last loss.
* ``{job}-loss``: a table artifact with one row per logged step. When a later attempt resumes the
  run from a checkpoint (``training.resumed``), the steps it re-does replace the earlier rows for
  those steps instead of appearing twice. Its description is markdown with the loss curve
  (train and eval loss per step, :mod:`.loss_curve`) embedded as a ``data:image/png`` URI,
  which the Prefect UI renders on the card and on the artifact's page.
* ``{job}-checkpoints``: a table artifact with one row per committed checkpoint (step, the train
  and eval loss last logged at or before it, URI), and the final adapter once the run completes.

When the run completes, the curve is also saved as ``loss.png`` beside the final adapter
(``{run}/loss.png``) if the backend has run storage this process can reach.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    TableArtifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.logging import get_run_logger

from arkor_ops.errors import ArkorOpsError
from arkor_ops.flows.loss_curve import render_loss_png
from arkor_ops.results import (
    Callback,
    CheckpointContext,
    LogContext,
    PhaseContext,
    ResumedContext,
    StartedContext,
    TrainingResult,
)
from arkor_ops.storage import RunLayout, Storage

logger = logging.getLogger(__name__)

#: Minimum seconds between two updates of the loss table (the last rows are always flushed).
TABLE_INTERVAL_SECONDS = 2.0

#: The columns of the loss table, in order.
LOSS_COLUMNS = ("step", "loss", "eval_loss", "learning_rate", "epoch")


def artifact_key(job_id: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for one run's artifact."""
    base = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-") or "run"
    return f"{base[:40]}-{what}"


def phase_line(ctx: PhaseContext) -> str:
    """A ``job.phase`` update as one log line's text: ``phase · reason · message · hint``."""
    parts = [ctx.phase, ctx.reason, ctx.message, ctx.hint]
    return " · ".join(str(p) for p in parts if p)


def _fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RunReporter:
    """Trainer callbacks that write a run's progress into the flow run's logs and artifacts."""

    def __init__(self, job_id: str, max_steps: int | None) -> None:
        self.job_id = job_id
        self.max_steps = max_steps
        self.log = get_run_logger()
        #: One dict per logged step (``LOSS_COLUMNS``, raw values), in step order.
        self.rows: list[dict[str, Any]] = []
        #: Committed checkpoints: step -> URI (a checkpoint saved again at a step replaces it).
        self.checkpoints: dict[int, str] = {}
        self.final_uri: str | None = None
        self.curve_uri: str | None = None
        self._table_at = 0.0
        self._table_dirty = False
        self._ids: dict[str, UUID] = {}

    async def begin(self) -> None:
        """Create the three artifacts: progress at 0 %, an empty loss table, no checkpoints."""
        self._ids["progress"] = await acreate_progress_artifact(
            progress=0.0,
            key=artifact_key(self.job_id, "progress"),
            description="Waiting for the first step",
        )
        self._ids["loss"] = await acreate_table_artifact(
            table=[],
            key=artifact_key(self.job_id, "loss"),
            description="No step logged yet",
        )
        self._ids["checkpoints"] = await acreate_table_artifact(
            table=[],
            key=artifact_key(self.job_id, "checkpoints"),
            description="No checkpoint committed yet",
        )

    def callbacks(self) -> dict[str, Callback]:
        """The callbacks to hand to ``create_async_trainer``."""
        return {
            "on_started": self.on_started,
            "on_log": self.on_log,
            "on_checkpoint": self.on_checkpoint,
            "on_phase": self.on_phase,
            "on_resumed": self.on_resumed,
        }

    # -- events ---------------------------------------------------------------------------------

    async def on_started(self, ctx: StartedContext) -> None:
        """``training.started``: log the run's metadata."""
        self.log.info("Training %s started", self.job_id)

    async def on_phase(self, ctx: PhaseContext) -> None:
        """``job.phase``: explain a wait (queued, unschedulable, pulling the image, …)."""
        self.log.info("Job %s: %s", self.job_id, phase_line(ctx))

    async def on_resumed(self, ctx: ResumedContext) -> None:
        """``training.resumed``: say so, and drop the rows of the steps that will be re-done."""
        step = ctx.step
        self.log.warning(
            "Training %s resumed from step %s (attempt %s): %s",
            self.job_id,
            step,
            ctx.attempt,
            ctx.reason,
        )
        self._drop_rows_after(step)

    def _drop_rows_after(self, step: int) -> None:
        kept = [r for r in self.rows if not isinstance(r["step"], int) or r["step"] <= step]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._table_dirty = True

    async def on_log(self, ctx: LogContext) -> None:
        """``training.log``: log the step, set its table row, advance the progress bar.

        A step that is logged again (re-done after a resume) replaces its row and the rows
        after it; an evaluation logged at the same step fills in that step's row.
        """
        row: dict[str, Any] = {
            "step": ctx.step,
            "loss": ctx.loss,
            "eval_loss": ctx.eval_loss,
            "learning_rate": ctx.learning_rate,
            "epoch": ctx.epoch,
        }
        step, loss = row["step"], row["loss"]
        if loss is None and row["eval_loss"] is not None:
            self.log.info("step %s eval loss %s", step, _fmt(row["eval_loss"]))
        else:
            self.log.info("step %s loss %s", step, _fmt(loss))
        last = self.rows[-1] if self.rows else None
        if isinstance(step, int) and last is not None and last["step"] == step:
            self.rows[-1] = {k: last[k] if v is None else v for k, v in row.items()}
        else:
            if isinstance(step, int):
                self._drop_rows_after(step - 1)
            self.rows.append(row)
        self._table_dirty = True
        if self.max_steps and isinstance(step, int):
            await self._progress(100.0 * step / self.max_steps, self._progress_line("Step"))
        if time.monotonic() - self._table_at >= TABLE_INTERVAL_SECONDS:
            await self.flush_table()

    async def on_checkpoint(self, ctx: CheckpointContext) -> None:
        """``checkpoint.saved``: log it and add its row to the checkpoints table."""
        step = ctx.step
        for artifact in ctx.artifacts:
            uri = artifact.uri
            self.checkpoints[step] = uri
            self.log.info("Checkpoint at step %s committed: %s", step, uri)
        await self._publish_checkpoints()

    async def finish(
        self, result: TrainingResult, run_storage: tuple[Storage, RunLayout] | None = None
    ) -> None:
        """The run ended: save the curve beside the final adapter, update all three artifacts.

        Args:
            result: the training result (job, artifacts).
            run_storage: the run's storage as this process reaches it
                (``Backend.run_storage``); ``None``: the curve is only shown in the flow run.
        """
        for artifact in result.artifacts:
            if artifact.kind == "final":
                self.final_uri = artifact.uri
        png = await self._render() if self.rows else None
        if png is not None and self.final_uri and run_storage is not None:
            storage, layout = run_storage
            await self._save_curve(storage, layout.loss_curve, png)
        await self._publish_loss(png)
        await self._publish_checkpoints()
        status = result.job.status
        line = self._progress_line(f"{(status or 'ended').capitalize()} at step")
        if status == "completed":
            await self._progress(100.0, line)
        elif status:
            await self._progress(None, line)

    # -- artifacts ------------------------------------------------------------------------------

    async def flush_table(self) -> None:
        """Update the loss table and its curve if steps were logged since the last update."""
        if self._table_dirty:
            await self._publish_loss(await self._render() if self.rows else None)

    async def _render(self) -> bytes:
        train = [(r["step"], r["loss"]) for r in self.rows if self._plottable(r, "loss")]
        evals = [(r["step"], r["eval_loss"]) for r in self.rows if self._plottable(r, "eval_loss")]
        return await asyncio.to_thread(render_loss_png, train, evals, title=self.job_id)

    @staticmethod
    def _plottable(row: dict[str, Any], column: str) -> bool:
        return isinstance(row["step"], int) and _number(row[column]) is not None

    async def _publish_loss(self, png: bytes | None) -> None:
        train = sum(1 for r in self.rows if self._plottable(r, "loss"))
        evals = sum(1 for r in self.rows if self._plottable(r, "eval_loss"))
        lines = [f"Train loss at {train} steps, eval loss at {evals}"]
        if self.curve_uri:
            lines.append(f"Saved as `{self.curve_uri}`")
        if png is not None:
            data = base64.b64encode(png).decode("ascii")
            lines.append(f"![loss curve of {self.job_id}](data:image/png;base64,{data})")
        table = [{k: _fmt(v) for k, v in row.items()} for row in self.rows]
        await self._update("loss", table, "\n\n".join(lines))
        self._table_dirty = False
        self._table_at = time.monotonic()

    def _checkpoint_rows(self) -> list[dict[str, str]]:
        rows = [
            self._checkpoint_row(step, "checkpoint", uri)
            for step, uri in sorted(self.checkpoints.items())
        ]
        if self.final_uri:
            rows.append(self._checkpoint_row(self._last_step(), "final adapter", self.final_uri))
        return rows

    def _checkpoint_row(self, step: int | None, what: str, uri: str) -> dict[str, str]:
        return {
            "step": _fmt(step),
            "artifact": what,
            "train_loss": _fmt(self._latest("loss", step)),
            "eval_loss": _fmt(self._latest("eval_loss", step)),
            "uri": uri,
        }

    def _latest(self, column: str, step: int | None) -> Any:
        """The last ``column`` value logged at or before ``step`` (any step when None)."""
        for row in reversed(self.rows):
            at = row["step"]
            if row[column] is not None and (step is None or (isinstance(at, int) and at <= step)):
                return row[column]
        return None

    def _last_step(self) -> int | None:
        steps = [r["step"] for r in self.rows if isinstance(r["step"], int)]
        return max(steps) if steps else None

    async def _publish_checkpoints(self) -> None:
        rows = self._checkpoint_rows()
        count = len(self.checkpoints)
        line = f"{count} checkpoint{'' if count == 1 else 's'}"  # one short line: the card's
        if self.final_uri:
            line += " + final adapter"
        elif count:
            line += f", newest at step {max(self.checkpoints)}"
        else:
            line = "No checkpoint committed yet"
        await self._update("checkpoints", rows, line)

    async def _update(self, which: str, table: list[dict[str, str]], description: str) -> None:
        artifact_id = self._ids.get(which)
        if artifact_id is None:  # begin() was not called
            return
        data = await TableArtifact(table=table).aformat()
        async with get_client() as client:
            await client.update_artifact(
                artifact_id=artifact_id,
                artifact=ArtifactUpdate(data=data, description=description),
            )

    def _progress_line(self, what: str) -> str:
        """``Step 6 of 8 · loss 0.3333`` (``what`` first: the card shows one line)."""
        step = self._last_step() or 0
        line = f"{what} {step} of {self.max_steps}" if self.max_steps else f"{what} {step}"
        loss = self._latest("loss", None)
        return line + (f" · loss {_fmt(loss)}" if loss is not None else "")

    async def _progress(self, percent: float | None, line: str) -> None:
        artifact_id = self._ids.get("progress")
        if artifact_id is None:
            return
        if percent is None:  # keep the bar where it stopped, say why
            async with get_client() as client:
                await client.update_artifact(
                    artifact_id=artifact_id,
                    artifact=ArtifactUpdate(description=line),
                )
            return
        await aupdate_progress_artifact(
            artifact_id,
            progress=max(0.0, min(100.0, percent)),
            description=line,
        )

    # -- storage --------------------------------------------------------------------------------

    async def _save_curve(self, storage: Storage, uri: str, png: bytes) -> None:
        try:
            await asyncio.to_thread(storage.put_bytes, uri, png)
        except (ArkorOpsError, OSError) as exc:  # the run itself completed: warn, go on
            self.log.warning("Could not save the loss curve to %s: %s", uri, exc)
            return
        self.curve_uri = uri
        self.log.info("Loss curve saved to %s", uri)
