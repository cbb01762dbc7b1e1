"""Helpers of the tests in tests/local/ (their fixtures are in conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from arkor_ops.backends.local import LocalBackend, LocalSettings

REPO = Path(__file__).resolve().parents[2]


FAKE_WORKER = "tests.local.fake_worker"


def make_backend(runs_dir: Path, **overrides: Any) -> LocalBackend:
    """A backend with runs under ``runs_dir`` and the fake worker."""
    settings: dict[str, Any] = {
        "runs_dir": runs_dir,
        "python": sys.executable,
        "worker_module": FAKE_WORKER,
        "sidecar_linger_seconds": 1.0,
        "cancel_timeout_seconds": 10,
    }
    settings.update(overrides)
    return LocalBackend(LocalSettings(**settings))


def config_fields(dataset: Path, **extra: Any) -> dict[str, Any]:
    """Trainer fields for a small run."""
    fields: dict[str, Any] = {
        "name": "Support Bot v1",
        "model": "tiny",
        "dataset": {"type": "file", "path": str(dataset)},
        "max_steps": 6,
        "save_steps": 3,
    }
    fields.update(extra)
    return fields
