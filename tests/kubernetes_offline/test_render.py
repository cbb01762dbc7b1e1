"""`arkor-ops render`: what a run would create, for review, with the run's secrets left out."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from arkor_ops.cli import main

TOKEN = "hf_render_test_secret_0123456789"


def write(tmp_path: Path, **overrides: object) -> Path:
    config = {
        "name": "render-me",
        "model": "unsloth/gemma-3-270m-it",
        "dataset": {"type": "blob", "url": "https://example.com/d.jsonl", "token": TOKEN},
        **overrides,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_render_prints_the_job_and_config_map_with_this_environment_s_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARKOR_K8S_NAMESPACE", "ml-team")
    monkeypatch.setenv("ARKOR_K8S_GPU_TYPE", "NVIDIA-L4")
    assert main(["render", str(write(tmp_path)), "--name", "render-me-0001"]) == 0
    out = capsys.readouterr().out
    pre, pre_config, job, config_map = list(yaml.safe_load_all(out))
    assert (job["kind"], job["metadata"]["name"], job["metadata"]["namespace"]) == (
        "Job",
        "render-me-0001",
        "ml-team",
    )
    assert config_map["kind"] == "ConfigMap"
    # the CPU pre-flight comes first, on the CPU pool, without a GPU
    assert (pre["kind"], pre["metadata"]["name"]) == ("Job", "render-me-0001-preflight")
    assert pre_config["metadata"]["name"] == "render-me-0001-preflight-config"
    assert "affinity" not in pre["spec"]["template"]["spec"]
    assert "NVIDIA-L4" in yaml.safe_dump(job)
    assert TOKEN not in out  # the credentials stay in the Secrets, which are not printed

    monkeypatch.setenv("ARKOR_K8S_PREFLIGHT", "false")
    assert main(["render", str(write(tmp_path)), "--name", "render-me-0001"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 2


def test_render_names_the_bad_field_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", str(write(tmp_path, lora={"r": 0}))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lora.r" in captured.err


def test_a_bad_setting_is_named_by_its_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARKOR_K8S_CANCEL_GRACE_SECONDS", "soon")
    assert main(["render", str(write(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "ARKOR_K8S_CANCEL_GRACE_SECONDS" in captured.err
