"""Score the base model and the trained adapter on the held-out tickets, side by side.

    python examples/triage/evaluate.py JOB_ID|RESULT.json [--samples 8]

Runs two evaluation jobs through the evaluation stage (:func:`arkor_ops.create_evaluator`, the
same job, events and metrics the retrain flows' promotion gate uses): the base model alone, then
the run's final adapter on it, each on the first ``--samples`` tickets of ``test.jsonl``
(greedy answers). The table shows, per metric, both scores and the difference: the share of
answers that are JSON, exact match of each triage field against the reference, and the held-out
loss; then the first ticket's two answers. Every answer is kept beside the metrics
(``samples.jsonl`` under the printed prefix, in the run's storage).
``ARKOR_DEMO_EVAL_SAMPLES`` changes the default number of tickets; the jobs run on
``$ARKOR_BACKEND`` (``local`` by default), where the training ran.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from arkor_ops import create_evaluator
from arkor_ops.evaluator import EvaluationResult
from arkor_ops.loader import load_trainer

HERE = Path(__file__).resolve().parent
FIELDS = ("category", "urgency", "summary", "nextAction")
METRICS = ("json_valid", *(f"field_match:{f}" for f in FIELDS), "loss")


def evaluate(
    label: str, adapter: dict[str, Any] | None, args: argparse.Namespace, progress: Progress
) -> tuple[EvaluationResult, list[dict[str, Any]]]:
    """One evaluation job, its progress shown as a bar: its result and per-sample records;
    exits when it does not complete."""
    model = load_trainer(HERE / "trainer.py").config.model
    task = progress.add_task(label, total=None)
    with create_evaluator(  # the backend: $ARKOR_BACKEND (local by default), closed at the end
        name=f"triage-eval-{label}",
        model=model,
        adapter=adapter,
        evaluation={
            "dataset": {"type": "file", "path": str(HERE / "test.jsonl")},
            "dataset_format": "chatml",
            "metrics": list(METRICS),
            "max_samples": args.samples,
            "generation": {"max_new_tokens": args.max_new_tokens},
        },
        callbacks={
            "on_progress": lambda e: progress.update(task, completed=e.done, total=e.total),
        },
    ) as evaluator:
        result = evaluator.wait()
        if result.status != "completed":
            raise SystemExit(f"the {label} evaluation {result.status}: {result.error or ''}")
        progress.update(task, completed=result.samples, total=result.samples)
        return result, evaluator.samples()


def cell(value: float | None, metric: str) -> str:
    """A score as shown: a share in percent, the loss as it is."""
    if value is None:
        return "-"
    return f"{value:.3f}" if metric == "loss" else f"{value:.0%}"


def delta(base: float | None, tuned: float | None, metric: str) -> str:
    """The adapter's change, green when it is better (lower for the loss)."""
    if base is None or tuned is None:
        return "-"
    diff = tuned - base
    better = diff < 0 if metric == "loss" else diff > 0
    text = f"{diff:+.3f}" if metric == "loss" else f"{diff * 100:+.0f} pts"
    return f"[green]{text}[/]" if better else (f"[red]{text}[/]" if diff else text)


def main() -> int:
    """Evaluate base and adapter and print the comparison."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("job_id", help="the run, or the file `arkor-ops start --result-file` wrote")
    parser.add_argument(
        "--samples", type=int, default=int(os.environ.get("ARKOR_DEMO_EVAL_SAMPLES", "8"))
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    if Path(args.job_id).is_file():  # job ids have no "/": a path is a result file
        args.job_id = json.loads(Path(args.job_id).read_text())["job"]["id"]
    console = Console(highlight=False)
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        base, base_answers = evaluate("base", None, args, progress)
        final = {"kind": "final", "job_id": args.job_id}
        tuned, tuned_answers = evaluate("adapter", final, args, progress)
    table = Table(title=f"held-out tickets ({tuned.samples}): base model vs. adapter")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("adapter", justify="right")
    table.add_column("change", justify="right")
    for metric in METRICS:
        b, t = base.metrics.get(metric), tuned.metrics.get(metric)
        table.add_row(metric, cell(b, metric), cell(t, metric), delta(b, t, metric))
    console.print(table)
    first = Table(title="the first ticket's answers", show_header=False, show_lines=True)
    first.add_column(style="bold", width=9)
    first.add_column(overflow="fold")
    first.add_row("ticket", tuned_answers[0]["prompt"][-1]["content"])
    first.add_row("base", base_answers[0]["answer"] or "(empty)")
    first.add_row("adapter", tuned_answers[0]["answer"] or "(empty)")
    first.add_row("expected", tuned_answers[0]["reference"])
    console.print(first)
    console.print(f"every answer: {tuned.uri}/samples.jsonl (base: {base.uri}/samples.jsonl)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
