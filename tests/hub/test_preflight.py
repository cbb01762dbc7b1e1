"""The CPU pre-flight against a hub: a gated model fails there; a readable one passes without a
single weight downloaded (only its config and tokenizer), and the GPU run trains the commit
the pre-flight pinned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hub import HubTarget
from tests.worker.helpers import RunDir, start_worker

pytestmark = [pytest.mark.hub, pytest.mark.train, pytest.mark.timeout(300)]


def _start(run: RunDir, config: dict[str, Any], *, preflight: bool) -> tuple[int, str]:
    env = run.env(config)  # HF_ENDPOINT (or none) and HF_HOME as `online` set them
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        env.pop(var, None)
    if preflight:
        env["ARKOR_PREFLIGHT"] = "1"
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=240)
    return proc.returncode, stderr


def test_gated_model_fails_the_preflight(online: Path, hub: HubTarget, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run", "job-gated", f"file://{tmp_path / 'storage'}")
    config = {"name": "gated", "model": hub.gated_id, "dataset": dict(hub.dataset), "maxSteps": 1}

    code, stderr = _start(run, config, preflight=True)

    assert code == 2, stderr
    events = run.events()
    assert [e.type for e in events] == ["job.phase", "training.failed"]
    assert "is gated and no HF token is set" in events[-1].error
    if hub.server is not None:
        assert not hub.server.downloads(hub.gated_id), "refused before any file moved"


def test_preflight_fetches_no_weights_and_pins_what_the_run_trains(
    online: Path, hub: HubTarget, tmp_path: Path
) -> None:
    run = RunDir(tmp_path / "run", "job-hub", f"file://{tmp_path / 'storage'}")
    config = hub.arkor_config({"name": "hub-preflight", "maxSteps": 1})
    before = hub.server.mark() if hub.server else 0

    code, stderr = _start(run, config, preflight=True)

    assert code == 0, stderr
    passed = [e for e in run.events() if e.type == "preflight.passed"]
    assert len(passed) == 1, stderr
    assert passed[0].rows > 0
    assert passed[0].preview[0].tokens > 0
    if hub.server is not None:
        fetched = [
            r["path"].rsplit("/", 1)[-1]
            for r in hub.server.requests()[before:]
            if "/resolve/" in r["path"] and f"/{hub.model_id}/" in r["path"]
        ]
        assert "config.json" in fetched
        assert not [f for f in fetched if f.endswith((".safetensors", ".bin"))], fetched

    # The GPU pod continues the log and trains the commit the pre-flight pinned.
    run.event_log.unlink()
    code, stderr = _start(run, config, preflight=False)
    assert code == 0, stderr
    events = run.events()
    assert [e.type for e in events[:3]] == ["job.phase", "preflight.passed", "training.started"]
    started = events[2]
    assert started.metadata["modelRevision"] == hub.head("model", hub.model_id)
    assert events[-1].type == "training.completed"
