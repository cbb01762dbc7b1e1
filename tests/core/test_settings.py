"""One settings tree: every group reads its variables, and a bad value names the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arkor_ops.errors import BackendError
from arkor_ops.settings import (
    DEFAULT_EVENT_LOG,
    DEFAULT_SIDECAR_PORT,
    SECRET_ENV,
    FlowSettings,
    KubernetesSettings,
    LocalSettings,
    RunSettings,
    S3Settings,
    SettingsError,
    SidecarSettings,
    WorkerEnvSettings,
    default_backend,
    read,
    secret_values,
)
from arkor_ops.storage import s3_client_kwargs

RUN = {"ARKOR_JOB_ID": "run-1", "ARKOR_STORAGE_URI": "file:///tmp/runs"}
PACKAGE = Path(__file__).resolve().parents[2] / "arkor_ops"


@pytest.mark.parametrize(
    ("cls", "env", "variable"),
    [
        (RunSettings, {"ARKOR_JOB_ID": "run-1"}, "ARKOR_STORAGE_URI"),
        (SidecarSettings, {**RUN, "ARKOR_SIDECAR_PORT": "abc"}, "ARKOR_SIDECAR_PORT"),
        (WorkerEnvSettings, {**RUN, "ARKOR_MAX_ATTEMPTS": "0"}, "ARKOR_MAX_ATTEMPTS"),
        (WorkerEnvSettings, {**RUN, "HF_ENDPOINT": "ftp://hub"}, "HF_ENDPOINT"),
        (LocalSettings, {"ARKOR_START_TIMEOUT_SECONDS": "-1"}, "ARKOR_START_TIMEOUT_SECONDS"),
        (FlowSettings, {"ARKOR_FLOW_CANCEL_CHECK_SECONDS": "-1"}, "FLOW_CANCEL_CHECK_SECONDS"),
    ],
)
def test_a_bad_value_names_its_variable(cls: type, env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        read(cls, env)


def test_a_bad_process_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARKOR_K8S_GPU_COUNT", "many")
    with pytest.raises(BackendError, match="ARKOR_K8S_GPU_COUNT"):
        read(KubernetesSettings, error=BackendError)


def test_the_shared_defaults_are_written_once() -> None:
    assert SidecarSettings.model_fields["event_log"].default == DEFAULT_EVENT_LOG
    assert WorkerEnvSettings.model_fields["event_log"].default == DEFAULT_EVENT_LOG
    assert KubernetesSettings.model_fields["sidecar_port"].default == DEFAULT_SIDECAR_PORT
    assert SidecarSettings.model_fields["sidecar_port"].default == DEFAULT_SIDECAR_PORT


def test_s3_endpoint_falls_back_through_the_aws_names() -> None:
    env = {"ARKOR_S3_ENDPOINT_URL": "", "AWS_ENDPOINT_URL": "http://s3:9000"}
    kwargs = s3_client_kwargs(env)
    assert kwargs["endpoint_url"] == "http://s3:9000" and kwargs["region_name"] == "us-east-1"
    assert read(S3Settings, {"AWS_DEFAULT_REGION": "eu-west-1"}).region_name() == "eu-west-1"


def test_secret_values_are_the_set_secret_variables_longest_first() -> None:
    env = {"HF_TOKEN": "hf_abcdef", "AWS_SECRET_ACCESS_KEY": "k" * 20, "ARKOR_JOB_ID": "public"}
    assert secret_values(8, env) == ["k" * 20, "hf_abcdef"]
    assert secret_values(10, env) == ["k" * 20]
    assert "MLFLOW_TRACKING_TOKEN" in SECRET_ENV and "ARKOR_DATASET_TOKEN" in SECRET_ENV


def test_the_default_backend_comes_from_arkor_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARKOR_BACKEND", raising=False)
    assert default_backend("kubernetes") == "kubernetes"
    monkeypatch.setenv("ARKOR_BACKEND", "local")
    assert default_backend("kubernetes") == "local"


def test_only_the_settings_package_reads_the_environment() -> None:
    """Elsewhere ``os.environ`` may only be handed on (a child process, Prefect), said inline."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(PACKAGE / "settings"):
            continue
        if path.is_relative_to(PACKAGE / "templates"):  # `arkor-ops init` copies: user code
            continue
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bos\.(environ|getenv)\b", code) and "not config" not in line:
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


def test_a_mapping_is_read_like_the_environment() -> None:
    env = {"ARKOR_K8S_NODE_SELECTOR": '{"pool": "a100"}', "ARKOR_K8S_IMAGE_PULL_SECRETS": '["r"]'}
    settings = read(KubernetesSettings, env)
    assert settings.node_selector == {"pool": "a100"} and settings.image_pull_secrets == ("r",)
    with pytest.raises(SettingsError, match="ARKOR_K8S_NODE_SELECTOR"):
        read(KubernetesSettings, {"ARKOR_K8S_NODE_SELECTOR": "pool=a100"})
