"""Early stopping on the eval loss (``early_stopping``), and which committed checkpoint is best.

Why not transformers' ``EarlyStoppingCallback``: it requires ``load_best_model_at_end``, which
reloads the best weights at the end (so the final adapter would silently be an older one) and
ties the save schedule to the eval schedule; and it reports neither why nor where it stopped.
Here the loop stops after committing a checkpoint at the stopping step, the final adapter is the
last weights, and the completed event says why and which committed checkpoint has the lowest
eval loss. A resumed attempt counts patience afresh from its own evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EarlyStop:
    """Patience over the evaluations of one attempt."""

    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad: int = 0
    reason: str | None = None
    values: dict[int, float] = field(default_factory=dict)

    def observe(self, step: int, eval_loss: float) -> bool:
        """Record an evaluation; True when the run should stop (after a checkpoint) now."""
        self.values[step] = eval_loss
        if self.best is None or eval_loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad = eval_loss, step, 0
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.reason = (
            f"eval_loss did not improve on {self.best:.4g} (step {self.best_step}) by more than "
            f"{self.min_delta:g} in {self.patience} evaluation(s) in a row"
        )
        return True

    def metrics(self, committed: list[int]) -> dict[str, Any]:
        """``Metrics`` fields: whether it stopped early, why, and the best committed step."""
        scored = [(self.values[s], s) for s in committed if s in self.values]
        best = min(scored) if scored else None
        return {
            "stopped_early": self.reason is not None,
            "stop_reason": self.reason,
            "best_step": best[1] if best else None,
            "best_eval_loss": best[0] if best else None,
        }
