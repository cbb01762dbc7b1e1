"""A ServiceAccount token from TokenRequest only grants what its namespaced Role allows."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.fixtures.cluster import K8sCluster

pytestmark = pytest.mark.cluster


def _status(call: object) -> int:
    try:
        call()  # type: ignore[operator]
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_service_account_token_is_limited_to_its_role(
    k8s_cluster: K8sCluster, k8s_namespace: str
) -> None:
    admin = k8s_cluster.api_client()
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    core.create_namespaced_service_account(k8s_namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(k8s_namespace, {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(k8s_namespace, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": k8s_namespace}],
    })  # fmt: skip
    token = core.create_namespaced_service_account_token(
        "reader", k8s_namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token

    admin_cfg = k8s_cluster.configuration()
    cfg = client.Configuration()
    cfg.host = admin_cfg.host
    cfg.ssl_ca_cert = admin_cfg.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(cfg) as api:
        sa_core = client.CoreV1Api(api)
        assert _status(lambda: sa_core.list_namespaced_pod(k8s_namespace)) == 200
        assert _status(lambda: sa_core.list_namespaced_pod("default")) == 403
        assert _status(lambda: sa_core.list_namespaced_secret(k8s_namespace)) == 403
        assert _status(lambda: sa_core.delete_collection_namespaced_pod(k8s_namespace)) == 403
        assert _status(lambda: sa_core.create_namespaced_config_map(
            k8s_namespace, {"metadata": {"name": "x"}}
        )) == 403  # fmt: skip
    who = k8s_cluster.kubectl(
        "auth", "can-i", "list", "pods", "-n", "default",
        f"--as=system:serviceaccount:{k8s_namespace}:reader", check=False,
    )  # fmt: skip
    assert who.stdout.strip() == "no"
