"""A run's loss curve as a PNG: train and eval loss per logged step.

Drawn in the flow's process with matplotlib's Agg backend (no display, no ``pyplot`` state), not
in the worker: the trainer image's lock (``images/trainer/requirements.lock``) has no matplotlib,
and the flow already holds every logged step, re-done steps after a resume included. The PNG
carries its point counts as text metadata (``Description``), so a reader can check what it shows
without decoding the picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

#: (step, loss) pairs, in step order.
Points = Sequence[tuple[int, float]]

_TRAIN_COLOR = "#2563eb"
_EVAL_COLOR = "#ea580c"
_MARKERS_UP_TO = 60  # points; past that the markers only blur the line


def points_description(train: Points, evaluation: Points) -> str:
    """The PNG's ``Description``: how many points each curve has."""
    return f"train loss: {len(train)} points; eval loss: {len(evaluation)} points"


def render_loss_png(train: Points, evaluation: Points, *, title: str) -> bytes:
    """Draw the two curves (either may be empty) and return the PNG's bytes.

    Args:
        train: (step, training loss) per logged step.
        evaluation: (step, evaluation loss) per evaluation.
        title: the picture's title (the run's job id, say).

    Returns:
        A 700x300 PNG.

    Raises:
        ImportError: matplotlib is missing (install the ``flows`` extra).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - the flows extra has it
        raise ImportError(
            "drawing the loss curve needs matplotlib: pip install 'arkor-ops[flows]'"
        ) from exc

    fig = Figure(figsize=(7, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for points, label, color in (
        (train, "train loss", _TRAIN_COLOR),
        (evaluation, "eval loss", _EVAL_COLOR),
    ):
        if points:
            steps, losses = zip(*points, strict=True)
            marker = "o" if len(points) <= _MARKERS_UP_TO or label == "eval loss" else None
            ax.plot(
                steps, losses, label=label, color=color, marker=marker, markersize=5, linewidth=2.5
            )
    # large type: the UI shows the picture at about half its size on the run page's card
    ax.set_title(title, fontsize=15)
    ax.set_xlabel("step", fontsize=14)
    ax.set_ylabel("loss", fontsize=14)
    ax.tick_params(labelsize=13)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if train or evaluation:
        ax.legend(frameon=False, fontsize=13)
    else:
        ax.text(0.5, 0.5, "no step logged yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(
        out,
        format="png",
        metadata={"Title": title, "Description": points_description(train, evaluation)},
    )
    return out.getvalue()
