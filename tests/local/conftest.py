"""A LocalBackend whose worker is the scripted fake (tests/local/fake_worker.py) unless told."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.local.helpers import REPO


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
