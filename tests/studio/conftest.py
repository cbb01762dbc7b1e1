"""A running `arkor-ops studio` over the test's local runs folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# the local backend's runs folder (and the environment its processes need), a tiny dataset
from tests.local.conftest import dataset_file, runs_dir
from tests.studio.helpers import Studio

__all__ = ["dataset_file", "runs_dir"]


@pytest.fixture
def studio(runs_dir: Path, tmp_path: Path) -> Iterator[Studio]:
    """The studio command over ``runs_dir``; stopped (Ctrl-C) at the end."""
    started = Studio(runs_dir, tmp_path / "studio.log")
    try:
        yield started
    finally:
        started.stop()
