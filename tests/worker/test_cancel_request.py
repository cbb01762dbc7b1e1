"""How the worker tells a cancel from a disruption: the pod's cancel annotation, as kubelet
writes the ``downwardAPI`` file of ``metadata.annotations`` (``key="value"`` lines)."""

from __future__ import annotations

import os
from pathlib import Path

from arkor_ops.worker.settings import load_settings


def _settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    base = {
        "ARKOR_JOB_ID": "job-1",
        "ARKOR_CONFIG_JSON": "{}",
        "ARKOR_STORAGE_URI": f"file://{tmp_path}/storage",
    }
    return load_settings({**base, **env})


def test_the_pod_annotation_file_decides(tmp_path: Path) -> None:
    annotations = tmp_path / "podinfo" / "annotations"
    annotations.parent.mkdir()
    settings = _settings(tmp_path, ARKOR_POD_ANNOTATIONS=str(annotations))
    assert settings.cancel_aware
    assert not settings.cancel_requested()  # not written yet
    annotations.write_text('kubectl.kubernetes.io/default-container="trainer"')
    assert not settings.cancel_requested()
    # kubelet replaces the file when the client annotates the pod
    tmp = annotations.with_name(".new")
    tmp.write_text(
        'arkor-ops.dev/cancel-requested="2026-12-01T10:00:00+00:00"\n'
        'kubectl.kubernetes.io/default-container="trainer"'
    )
    os.replace(tmp, annotations)
    assert settings.cancel_requested()


def test_a_similar_annotation_is_not_a_cancel(tmp_path: Path) -> None:
    annotations = tmp_path / "annotations"
    annotations.write_text('x.dev/note="arkor-ops.dev/cancel-requested=yes"\n')
    settings = _settings(tmp_path, ARKOR_POD_ANNOTATIONS=str(annotations))
    assert not settings.cancel_requested()


def test_without_either_setting_every_sigterm_is_a_cancel(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert not settings.cancel_aware
