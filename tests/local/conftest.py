"""A LocalBackend whose worker is the scripted fake (tests/local/fake_worker.py) unless told."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where the test's runs live; child processes can import `tests.*`."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("ARKOR_PING_SECONDS", "1")
    yield tmp_path / "runs"


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    """A two-row chat dataset (the fake worker does not read it; the real one does)."""
    path = tmp_path / "train.jsonl"
    row = '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}'
    path.write_text(row + "\n" + row + "\n")
    return path


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
