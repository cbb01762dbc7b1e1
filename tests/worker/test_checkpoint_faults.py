"""Resume over damaged checkpoints in real S3 (moto): a corrupt manifest, a manifest that names
files outside its folder, a file that fails its sha256. Each is skipped, logged, for the newest
valid one; nothing is ever written outside the checkpoint folder."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from arkor_ops.storage import MANIFEST_NAME, RunLayout, join_uri, open_storage
from arkor_ops.worker.checkpoints import (
    Manifest,
    RunIdentity,
    find_resume_point,
    upload_committed,
)

pytestmark = [pytest.mark.s3]

IDENTITY = RunIdentity("cfg-hash", "data-fp", "tiny-model", {"maxSteps": 10})


def _commit(layout: RunLayout, tmp_path: Path, step: int) -> Manifest:
    local = tmp_path / "local" / f"step-{step}"
    local.mkdir(parents=True)
    (local / "adapter_model.safetensors").write_bytes(f"weights of step {step}".encode() * 100)
    (local / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    storage = open_storage(layout.prefix)
    return upload_committed(storage, layout.checkpoint(step), local, step, IDENTITY)


def _escaping_manifest(layout: RunLayout, step: int, path: str) -> None:
    """A manifest whose file ``path`` is outside the folder, with the object and its real sha256
    in place, so that only the path check stops it."""
    storage = open_storage(layout.prefix)
    body = b"written where it must not be"
    prefix = layout.checkpoint(step)
    storage.put_bytes(join_uri(prefix, path.lstrip("/")), body)
    manifest = Manifest(
        step=step,
        config_hash=IDENTITY.config_hash,
        dataset_fingerprint=IDENTITY.dataset_fingerprint,
        base_model=IDENTITY.base_model,
        config=IDENTITY.config,
        files=[],
    ).model_dump(mode="json")
    manifest["files"] = [
        {"path": path, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
    ]
    storage.put_bytes(join_uri(prefix, MANIFEST_NAME), json.dumps(manifest).encode())


def test_resume_skips_damaged_checkpoints_for_the_newest_valid_one(
    tmp_path: Path, s3_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    layout = RunLayout(s3_prefix, "job-damaged")
    storage = open_storage(s3_prefix)
    for step in (2, 4, 6):
        _commit(layout, tmp_path, step)
    # step 4: a file whose bytes no longer match the manifest's sha256
    storage.put_bytes(join_uri(layout.checkpoint(4), "adapter_model.safetensors"), b"bit rot")
    # step 6: a manifest cut short (a torn write, a bad disk)
    manifest_6 = join_uri(layout.checkpoint(6), MANIFEST_NAME)
    storage.put_bytes(manifest_6, storage.get_bytes(manifest_6)[:40])
    # steps 8 and 10: manifests naming files outside the checkpoint folder
    dest_root = tmp_path / "resume" / "inner"
    outside_rel = tmp_path / "resume" / "escaped.txt"
    outside_abs = tmp_path / "absolute-target.txt"
    _escaping_manifest(layout, 8, "../../escaped.txt")
    _escaping_manifest(layout, 10, str(outside_abs))

    with caplog.at_level(logging.WARNING, logger="arkor_ops.worker.checkpoints"):
        found = find_resume_point(storage, layout, IDENTITY, "auto", dest_root)

    assert found is not None
    step, path = found
    assert step == 2
    assert (path / "adapter_model.safetensors").read_bytes() == b"weights of step 2" * 100
    assert not outside_rel.exists()
    assert not outside_abs.exists()
    assert sorted(p.name for p in dest_root.parent.iterdir()) == ["inner"]
    skipped = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipping checkpoint step 10: its manifest is unusable" in skipped
    assert "is not a relative path" in skipped
    assert "skipping checkpoint step 8: its manifest is unusable" in skipped
    assert "'..' part" in skipped
    assert "skipping checkpoint step 6: its manifest is unusable" in skipped
    assert (
        "skipping checkpoint step 4: checkpoint step 4: adapter_model.safetensors fails its sha256"
        in skipped
    )


def test_no_valid_checkpoint_left_starts_fresh(tmp_path: Path, s3_prefix: str) -> None:
    layout = RunLayout(s3_prefix, "job-all-bad")
    storage = open_storage(s3_prefix)
    _commit(layout, tmp_path, 3)
    storage.put_bytes(join_uri(layout.checkpoint(3), MANIFEST_NAME), b"{not json")

    assert find_resume_point(storage, layout, IDENTITY, "auto", tmp_path / "resume") is None
