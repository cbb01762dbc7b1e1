"""What the hub refuses fails fast, says what to do, exits 2 (never retried) and asks only once.

Each case runs the real worker process against the hub, before any weight is fetched. On the
local hub the access log also shows a refusal is final and comes at the first metadata request;
the real Hub answers metadata of a gated repo and refuses its files (before any weight moves).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.hub import HubTarget, TokenKind
from tests.worker.helpers import RunDir, start_worker

pytestmark = [pytest.mark.hub, pytest.mark.train, pytest.mark.timeout(300)]


def _config(hub: HubTarget, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": "refused",
        "model": hub.model_id,
        "dataset": dict(hub.dataset),
        "maxSteps": 1,
    }
    config.update(extra)
    return config


def _run(tmp_path: Path, config: dict[str, Any], token: str | None = None) -> tuple[int, str]:
    run = RunDir(tmp_path / "run", "job-refused", f"file://{tmp_path / 'storage'}")
    env = run.env(config)  # HF_ENDPOINT (or none) and HF_HOME as `online` set them
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        env.pop(var, None)
    if token:
        env["HF_TOKEN"] = token
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=240)
    failed = [e for e in run.events() if e.type == "training.failed"]
    assert len(failed) == 1, stderr
    assert not [e for e in run.events() if e.type == "training.started"]
    return proc.returncode, failed[0].error


def _listed(what: str, error: str) -> set[str]:
    """The names an error lists after ``what: `` (``subsets: a, b; splits: c``)."""
    found = re.search(rf"{what}: ([^;)]*)", error)
    assert found is not None, error
    return set(found[1].split(", "))


@pytest.mark.parametrize(
    ("case", "kind", "expected"),
    [
        ("gated, no token", None, "is gated and no HF token is set: accept the license at"),
        ("gated, token without access", "ungranted", "is gated and the token set has no"),
        ("refused token", "unknown", "refused the HF token"),
    ],
)
def test_gated_model_and_refused_token(  # noqa: PLR0917
    online: Path,
    hub: HubTarget,
    tmp_path: Path,
    case: str,
    kind: TokenKind | None,
    expected: str,
) -> None:
    token = hub.token(kind) if kind else None
    model = hub.gated_id if case.startswith("gated") else hub.model_id
    before = hub.server.mark() if hub.server else 0
    code, error = _run(tmp_path, _config(hub, model=model), token)
    assert code == 2, error
    assert expected in error, error
    assert "HF_TOKEN" in error, "the message names the setting that holds the token"
    assert token is None or token not in error
    if hub.server is not None:
        asked = [r for r in hub.server.requests()[before:] if model in r["path"]]
        assert len(asked) == 1, f"a refusal is final: asked {len(asked)} times: {asked}"
        assert "/resolve/" not in asked[0]["path"], "refused at the first metadata request"


def test_gated_model_with_a_granted_token_is_allowed(
    online: Path, hub: HubTarget, tmp_path: Path
) -> None:
    token = hub.token("granted")
    run = RunDir(tmp_path / "run", "job-granted", f"file://{tmp_path / 'storage'}")
    env = run.env(_config(hub, model=hub.gated_id))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(var, None)
    env["HF_TOKEN"] = token
    proc = start_worker(env)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert token not in stderr, "the token is scrubbed from the log"
    assert [e.type for e in run.events()][-1] == "training.completed"


def test_missing_revision_lists_the_branches(online: Path, hub: HubTarget, tmp_path: Path) -> None:
    before = hub.server.mark() if hub.server else 0
    code, error = _run(tmp_path, _config(hub, revision="v9-does-not-exist"))
    assert code == 2, error
    assert "has no revision 'v9-does-not-exist'" in error, error
    assert "branches: main" in error, error
    if hub.server is not None:
        assert not [r for r in hub.server.requests()[before:] if "/resolve/" in r["path"]]


def test_missing_model_and_dataset(online: Path, hub: HubTarget, tmp_path: Path) -> None:
    code, error = _run(tmp_path / "m", _config(hub, model="nobody/no-such-model"))
    assert code == 2, error
    assert "model 'nobody/no-such-model' does not exist" in error, error
    code, error = _run(
        tmp_path / "d",
        _config(hub, dataset={"type": "huggingface", "name": "nobody/no-such-data"}),
    )
    assert code == 2, error
    assert "dataset 'nobody/no-such-data' does not exist" in error, error


def test_missing_split_lists_the_splits(online: Path, hub: HubTarget, tmp_path: Path) -> None:
    code, error = _run(tmp_path, _config(hub, dataset={**hub.dataset, "split": "dev"}))
    assert code == 2, error
    assert "split dev" in error, error
    assert _listed("splits", error) == set(hub.dataset_splits), error


def test_missing_subset_lists_the_subsets(online: Path, hub: HubTarget, tmp_path: Path) -> None:
    code, error = _run(tmp_path, _config(hub, dataset={**hub.dataset, "subset": "fr"}))
    assert code == 2, error
    assert "subset fr" in error, error
    assert set(hub.dataset_subsets) <= _listed("subsets", error), error
