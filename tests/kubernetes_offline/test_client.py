"""The httpx client for the pod proxy gets the kubeconfig's server, TLS and token."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from arkor_ops.backends.kubernetes.client import bearer_header, httpx_client, load_configuration
from arkor_ops.errors import BackendError
from arkor_ops.settings import KubernetesSettings

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: "sa-token-123"}
contexts:
- name: ctx
  context: {cluster: c, user: u, namespace: ml}
current-context: ctx
"""


def test_configuration_from_kubeconfig_and_bearer(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(KUBECONFIG)
    cfg = load_configuration(KubernetesSettings(kubeconfig=str(path)))
    assert cfg.host == "https://10.0.0.1:6443"
    assert bearer_header(cfg) == {"Authorization": "Bearer sa-token-123"}


async def test_httpx_client_uses_host_and_tls_settings() -> None:
    cfg = client.Configuration()
    cfg.host = "https://10.0.0.1:6443"
    cfg.verify_ssl = False
    cfg.api_key = {"BearerToken": "abc"}
    http = httpx_client(cfg)
    try:
        assert str(http.base_url) == "https://10.0.0.1:6443"
    finally:
        await http.aclose()
    assert bearer_header(cfg) == {"Authorization": "Bearer abc"}
    assert bearer_header(client.Configuration()) == {}


def test_missing_kubeconfig_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="ARKOR_K8S_KUBECONFIG"):
        load_configuration(KubernetesSettings(kubeconfig=str(tmp_path / "nope")))
