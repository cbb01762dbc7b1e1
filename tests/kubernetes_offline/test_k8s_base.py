"""k8s/base agrees with what the backend builds: the admission policy's parameters are the
settings' defaults, and the NetworkPolicy selects run pods and admits only the sidecar's port."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.config import validate_config
from arkor_ops.settings import KubernetesSettings

BASE = Path(__file__).resolve().parents[2] / "k8s" / "base"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]


def test_admission_parameters_are_the_settings_defaults() -> None:
    (params,) = [d for d in _docs("admission.yaml") if d["kind"] == "ConfigMap"]
    data = params["data"]
    settings = KubernetesSettings()
    assert data["images"].split(",") == [settings.image, settings.sidecar_image]
    assert data["workerCommand"] == " ".join(settings.worker_command)
    assert data["sidecarCommand"] == " ".join(settings.sidecar_command)
    assert data["s3Secret"] == settings.s3_secret_name
    assert "arkor-ops-run" in data["serviceAccounts"].split(",")
    assert data["modelCacheHostPath"] == (settings.model_cache_host_path or "")
    assert data["modelCacheClaim"] == (settings.model_cache_claim or "")
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert {"admission.yaml", "networkpolicy.yaml"} <= set(kustomization["resources"])


def test_the_network_policy_admits_only_the_sidecar_port_of_run_pods() -> None:
    (policy,) = _docs("networkpolicy.yaml")
    config = validate_config(
        {"name": "n", "model": "m", "dataset": {"type": "file", "path": "/d"}, "maxSteps": 1}
    )
    pod_labels = m.build_run(config, KubernetesSettings(), name="n-1", storage_uri="s3://b/r").job[
        "spec"
    ]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    port = KubernetesSettings().sidecar_port
    rules = policy["spec"]["ingress"]
    assert all(r["ports"] == [{"protocol": "TCP", "port": port}] for r in rules)
    assert "ipBlock" in rules[0]["from"][0]  # the API server (patched per cluster)
    assert rules[1]["from"] == [
        {"podSelector": {"matchLabels": {"arkor-ops.dev/events-client": "true"}}}
    ]
