"""KubernetesSettings from ARKOR_K8S_* environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from arkor_ops.settings import KubernetesSettings


def test_defaults() -> None:
    s = KubernetesSettings()
    assert s.namespace == "arkor-ops"
    assert s.gpu_count == 1 and s.gpu_resource == "nvidia.com/gpu"
    assert s.node_selector == {"arkor-ops.dev/pool": "gpu"}
    assert s.events_via == "proxy"
    assert s.s3_secret_name == "arkor-ops-s3"


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "ARKOR_K8S_NAMESPACE": "ml-team",
        "ARKOR_K8S_GPU_COUNT": "2",
        "ARKOR_K8S_GPU_TYPE": "NVIDIA-A100-SXM4-80GB",
        "ARKOR_K8S_NODE_SELECTOR": '{"pool": "a100"}',
        "ARKOR_K8S_TOLERATIONS": '[{"key": "dedicated", "operator": "Equal", "value": "ml"}]',
        "ARKOR_K8S_IMAGE_PULL_SECRETS": '["regcred"]',
        "ARKOR_K8S_KUEUE_QUEUE": "team-a",
        "ARKOR_K8S_STORAGE_URI": "s3://bucket/runs",
        "ARKOR_K8S_S3_ENDPOINT_URL": "http://minio.arkor-ops:9000",
        "ARKOR_K8S_S3_CLIENT_ENDPOINT_URL": "http://127.0.0.1:9000",
        "ARKOR_K8S_HF_TOKEN": "hf_abc",
        "ARKOR_K8S_CANCEL_GRACE_SECONDS": "5",
        "ARKOR_K8S_EVENTS_VIA": "direct",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = KubernetesSettings()
    assert s.namespace == "ml-team" and s.gpu_count == 2
    assert s.gpu_type == "NVIDIA-A100-SXM4-80GB"
    assert s.node_selector == {"pool": "a100"}
    assert s.tolerations == ({"key": "dedicated", "operator": "Equal", "value": "ml"},)
    assert s.image_pull_secrets == ("regcred",)
    assert s.kueue_queue == "team-a"
    assert s.s3_client_endpoint_url == "http://127.0.0.1:9000"
    assert s.hf_token is not None and s.hf_token.get_secret_value() == "hf_abc"
    assert "hf_abc" not in repr(s)
    assert s.cancel_grace_seconds == 5 and s.events_via == "direct"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ARKOR_K8S_NAMESPACE", "Not_A_Namespace"),
        ("ARKOR_K8S_GPU_COUNT", "-1"),
        ("ARKOR_K8S_MEMORY_LIMIT", "lots"),
        ("ARKOR_K8S_STORAGE_URI", "gs://bucket"),
        ("ARKOR_K8S_EVENTS_VIA", "carrier-pigeon"),
    ],
)
def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        KubernetesSettings()


def test_unknown_init_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        KubernetesSettings(gpus=1)  # type: ignore[call-arg]


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    missing = [
        f"ARKOR_K8S_{name.upper()}"
        for name in KubernetesSettings.model_fields
        if f"`ARKOR_K8S_{name.upper()}`" not in doc
    ]
    assert missing == []
