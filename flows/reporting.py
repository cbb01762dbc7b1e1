"""Mirror a training run's events into the flow run: log lines and artifacts.

:class:`RunReporter` supplies the trainer callbacks used by ``wait_for_training``. It keeps three
things on the flow run page up to date:

* a progress artifact (``step / max_steps``, 100 % when the run ends),
* a table artifact with one row per logged step (new versions under one key): when a later
  attempt resumes the run from a checkpoint (``training.resumed``), the steps it re-does replace
  the earlier rows for those steps instead of appearing twice,
* a markdown artifact listing every committed checkpoint with its link, plus one link artifact
  per checkpoint.
"""

from __future__ import annotations

import re
import time
from typing import Any

from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.logging import get_run_logger

#: Minimum seconds between two versions of the loss table (the last rows are always flushed).
TABLE_INTERVAL_SECONDS = 2.0


def artifact_key(job_id: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for one run's artifact."""
    base = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-") or "run"
    return f"{base[:40]}-{what}"


def _fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


class RunReporter:
    """Trainer callbacks that write a run's progress into the flow run's logs and artifacts."""

    def __init__(self, job_id: str, max_steps: int | None) -> None:
        self.job_id = job_id
        self.max_steps = max_steps
        self.log = get_run_logger()
        self.rows: list[dict[str, str]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self._table_at = 0.0
        self._table_rows = 0
        self._progress_id: Any = None

    async def begin(self) -> None:
        """Create the progress artifact (at 0 %)."""
        self._progress_id = await acreate_progress_artifact(
            progress=0.0,
            key=artifact_key(self.job_id, "progress"),
            description=f"Training progress of `{self.job_id}`",
        )

    def callbacks(self) -> dict[str, Any]:
        """The callbacks to hand to ``create_async_trainer``."""
        return {
            "on_started": self.on_started,
            "on_log": self.on_log,
            "on_checkpoint": self.on_checkpoint,
            "on_phase": self.on_phase,
            "on_resumed": self.on_resumed,
        }

    async def _progress(self, percent: float) -> None:
        if self._progress_id is not None:
            percent = max(0.0, min(100.0, percent))
            await aupdate_progress_artifact(self._progress_id, progress=percent)

    async def on_started(self, ctx: Any) -> None:
        """``training.started``: log the run's metadata."""
        self.log.info("Training %s started", self.job_id)

    async def on_phase(self, ctx: Any) -> None:
        """``job.phase``: explain a wait (queued, unschedulable, pulling the image, …)."""
        parts = [getattr(ctx, k, None) for k in ("phase", "reason", "message", "hint")]
        self.log.info("Job %s: %s", self.job_id, " · ".join(str(p) for p in parts if p))

    async def on_resumed(self, ctx: Any) -> None:
        """``training.resumed``: say so, and drop the rows of the steps that will be re-done."""
        step = int(getattr(ctx, "step", 0) or 0)
        self.log.warning(
            "Training %s resumed from step %s (attempt %s): %s",
            self.job_id,
            step,
            getattr(ctx, "attempt", "?"),
            getattr(ctx, "reason", ""),
        )
        self._drop_rows_after(step)

    def _drop_rows_after(self, step: int) -> None:
        kept = [r for r in self.rows if int(r["step"] or 0) <= step]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._table_rows = -1  # publish the corrected table even if it got no longer

    async def on_log(self, ctx: Any) -> None:
        """``training.log``: log the step, set its table row, advance the progress bar.

        A step that is logged again (re-done after a resume) replaces its row and the rows
        after it; an evaluation logged at the same step fills in that step's row.
        """
        step = getattr(ctx, "step", None)
        loss = getattr(ctx, "loss", None)
        self.log.info("step %s loss %s", step, _fmt(loss))
        row = {
            "step": _fmt(step),
            "loss": _fmt(loss),
            "eval_loss": _fmt(getattr(ctx, "eval_loss", None)),
            "learning_rate": _fmt(getattr(ctx, "learning_rate", None)),
            "epoch": _fmt(getattr(ctx, "epoch", None)),
        }
        if isinstance(step, int):
            last = self.rows[-1] if self.rows else None
            if last is not None and last["step"] == row["step"]:
                merged = {k: v or last[k] for k, v in row.items()}
                self.rows[-1] = merged
                self._table_rows = -1
                row = {}
            else:
                self._drop_rows_after(step - 1)
        if row:
            self.rows.append(row)
        if self.max_steps and isinstance(step, int):
            await self._progress(100.0 * step / self.max_steps)
        if time.monotonic() - self._table_at >= TABLE_INTERVAL_SECONDS:
            await self.flush_table()

    async def on_checkpoint(self, ctx: Any) -> None:
        """``checkpoint.saved``: log it and publish a link to the committed checkpoint."""
        step = int(getattr(ctx, "step", 0) or 0)
        for artifact in getattr(ctx, "artifacts", None) or []:
            uri = getattr(artifact, "uri", str(artifact))
            self.checkpoints.append((step, uri))
            self.log.info("Checkpoint at step %s committed: %s", step, uri)
            await acreate_link_artifact(
                link=uri,
                link_text=f"checkpoint step {step}",
                key=artifact_key(self.job_id, f"checkpoint-{step}"),
                description=f"Committed checkpoint of `{self.job_id}` at step {step}",
            )
        await self._checkpoint_list()

    async def _checkpoint_list(self) -> None:
        lines = [f"# Checkpoints of `{self.job_id}`", "", "| step | checkpoint |", "|---|---|"]
        lines += [f"| {step} | [{uri}]({uri}) |" for step, uri in self.checkpoints]
        await acreate_markdown_artifact(
            markdown="\n".join(lines),
            key=artifact_key(self.job_id, "checkpoints"),
            description=f"Committed checkpoints of `{self.job_id}`",
        )

    async def flush_table(self) -> None:
        """Publish a new version of the loss table if rows were added since the last one."""
        if not self.rows or len(self.rows) == self._table_rows:
            return
        await acreate_table_artifact(
            table=list(self.rows),
            key=artifact_key(self.job_id, "loss"),
            description=f"Loss per logging step of `{self.job_id}`",
        )
        self._table_rows = len(self.rows)
        self._table_at = time.monotonic()

    async def finish(self, result: Any) -> None:
        """The run ended: flush the table, fill the progress bar, list the final artifacts."""
        await self.flush_table()
        status = getattr(getattr(result, "job", None), "status", None)
        if status == "completed":
            await self._progress(100.0)
        for artifact in getattr(result, "artifacts", None) or []:
            if getattr(artifact, "kind", None) == "final":
                await acreate_link_artifact(
                    link=artifact.uri,
                    link_text="final adapter",
                    key=artifact_key(self.job_id, "final"),
                    description=f"Final adapter of `{self.job_id}`",
                )
