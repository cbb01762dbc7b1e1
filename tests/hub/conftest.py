"""Fixtures for runs that download from a hub (``hub``: the local server or huggingface.co)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.hub import HubTarget

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def online(hub: HubTarget, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """This process and the runs it starts see the hub as a user's machine sees huggingface.co.

    ``make test`` turns the hub off for every other test (``HF_HUB_OFFLINE=1``); here it is on,
    with ``HF_ENDPOINT`` pointing at the test hub, as for a user behind a mirror, or unset for
    the real Hub. No ``HF_TOKEN`` unless a test sets one. Returns the model cache the runs share.
    """
    for var in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HF_ENDPOINT",
    ):
        monkeypatch.delenv(var, raising=False)
    if hub.hf_endpoint is not None:
        monkeypatch.setenv("HF_ENDPOINT", hub.hf_endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("ARKOR_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("ARKOR_PING_SECONDS", "1")
    return tmp_path / "model-cache"
