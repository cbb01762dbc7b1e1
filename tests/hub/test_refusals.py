"""What the hub refuses fails fast, says what to do, exits 2 (never retried) and asks only once.

Each case runs the real worker process against the test hub, before any weight is fetched.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hub import (
    DATASET_ID,
    GATED_ID,
    GRANTED_TOKEN,
    MODEL_ID,
    UNGRANTED_TOKEN,
    HubServer,
)
from tests.worker.conftest import RunDir, start_worker

pytestmark = [pytest.mark.hub, pytest.mark.train, pytest.mark.timeout(300)]


def _config(**extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "refused",
        "model": MODEL_ID,
        "dataset": {"type": "huggingface", "name": DATASET_ID},
        "maxSteps": 1,
    }
    config.update(extra)
    return config


def _run(tmp_path: Path, config: dict[str, Any], token: str | None = None) -> tuple[int, str]:
    run = RunDir(tmp_path / "run", "job-refused", f"file://{tmp_path / 'storage'}")
    env = run.env(config)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        env.pop(var, None)
    env.update({k: os.environ[k] for k in ("HF_ENDPOINT", "HF_HOME")})
    if token:
        env["HF_TOKEN"] = token
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=240)
    failed = [e for e in run.events() if e.type == "training.failed"]
    assert len(failed) == 1, stderr
    assert not [e for e in run.events() if e.type == "training.started"]
    return proc.returncode, failed[0].error


@pytest.mark.parametrize(
    ("case", "token", "expected"),
    [
        ("gated, no token", None, "is gated and no HF token is set: accept the license at"),
        ("gated, token without access", UNGRANTED_TOKEN, "is gated and the token set has no"),
        ("refused token", "hf_not_a_token_the_hub_knows_0000", "refused the HF token"),
    ],
)
def test_gated_model_and_refused_token(  # noqa: PLR0917
    online: Path, hub_server: HubServer, tmp_path: Path, case: str, token: str | None, expected: str
) -> None:
    model = GATED_ID if case.startswith("gated") else MODEL_ID
    before = hub_server.mark()
    code, error = _run(tmp_path, _config(model=model), token)
    assert code == 2, error
    assert expected in error, error
    assert "HF_TOKEN" in error, "the message names the setting that holds the token"
    assert token is None or token not in error
    asked = [r for r in hub_server.requests()[before:] if model in r["path"]]
    assert len(asked) == 1, f"a refusal is final: asked {len(asked)} times: {asked}"
    assert "/resolve/" not in asked[0]["path"], "refused at the first metadata request"


def test_gated_model_with_a_granted_token_is_allowed(
    online: Path, hub_server: HubServer, tmp_path: Path
) -> None:
    run = RunDir(tmp_path / "run", "job-granted", f"file://{tmp_path / 'storage'}")
    env = run.env(_config(model=GATED_ID))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(var, None)
    env.update({k: os.environ[k] for k in ("HF_ENDPOINT", "HF_HOME")}, HF_TOKEN=GRANTED_TOKEN)
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert GRANTED_TOKEN not in stderr, "the token is scrubbed from the log"
    assert [e.type for e in run.events()][-1] == "training.completed"


def test_missing_revision_lists_the_branches(
    online: Path, hub_server: HubServer, tmp_path: Path
) -> None:
    before = hub_server.mark()
    code, error = _run(tmp_path, _config(revision="v9-does-not-exist"))
    assert code == 2, error
    assert "has no revision 'v9-does-not-exist'" in error, error
    assert "branches: main" in error, error
    assert not [r for r in hub_server.requests()[before:] if "/resolve/" in r["path"]]


def test_missing_model_and_dataset(online: Path, hub_server: HubServer, tmp_path: Path) -> None:
    code, error = _run(tmp_path / "m", _config(model="nobody/no-such-model"))
    assert code == 2, error
    assert "model 'nobody/no-such-model' does not exist" in error, error
    code, error = _run(
        tmp_path / "d", _config(dataset={"type": "huggingface", "name": "nobody/no-such-data"})
    )
    assert code == 2, error
    assert "dataset 'nobody/no-such-data' does not exist" in error, error


def test_missing_split_lists_the_splits(
    online: Path, hub_server: HubServer, tmp_path: Path
) -> None:
    code, error = _run(
        tmp_path, _config(dataset={"type": "huggingface", "name": DATASET_ID, "split": "dev"})
    )
    assert code == 2, error
    assert "split dev" in error, error
    assert "splits: train, test" in error or "splits: test, train" in error, error


def test_missing_subset_lists_the_subsets(
    online: Path, hub_server: HubServer, tmp_path: Path
) -> None:
    dataset = {"type": "huggingface", "name": DATASET_ID, "subset": "fr"}
    code, error = _run(tmp_path, _config(dataset=dataset))
    assert code == 2, error
    assert "subset fr" in error, error
    assert "subsets: default" in error, error
