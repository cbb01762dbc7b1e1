"""k8s/serving/role.yaml is exactly what managing endpoints needs: a ServiceAccount bound to it
creates, reads, retargets, keys and deletes an endpoint (its Role included: RBAC lets no one
grant what they do not hold), and may do nothing else asked here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arkor_ops.errors import ServingError
from arkor_ops.serving.cluster import Endpoints, EndpointSpec, Target
from arkor_ops.settings import KubernetesSettings
from tests.fixtures.cluster import K8sCluster
from tests.kubernetes.helpers import K8S

pytestmark = [pytest.mark.cluster]


def _kubeconfig(cluster: K8sCluster, namespace: str, account: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = cluster.configuration()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": admin.host, "certificate-authority": admin.ssl_ca_cert},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": "c", "context": {"cluster": "c", "user": account, "namespace": namespace}}
        ],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    return path


def test_the_endpoints_role_is_enough_to_manage_an_endpoint(
    k8s_cluster: K8sCluster, k8s_namespace: str, tmp_path: Path
) -> None:
    ns = k8s_namespace
    k8s_cluster.kubectl("apply", "-n", ns, "-f", str(K8S / "serving" / "role.yaml"))
    k8s_cluster.kubectl("create", "serviceaccount", "manager", "-n", ns)
    k8s_cluster.kubectl(
        "create", "rolebinding", "manager", "-n", ns,
        "--role=arkor-ops-endpoints", f"--serviceaccount={ns}:manager",
    )  # fmt: skip
    settings = KubernetesSettings(
        namespace=ns,
        kubeconfig=str(_kubeconfig(k8s_cluster, ns, "manager", tmp_path / "kubeconfig")),
        # the pod is not run here: only the API calls are checked
        serving_image="registry.invalid/arkor-ops/serving:never",
        node_selector={"arkor-ops.dev/pool": "nowhere"},
    )
    spec = EndpointSpec(
        "triage", "s3://models/base", Target("1", "s3://runs/a/final", "champion", "m")
    )
    with Endpoints(settings) as endpoints:
        key = endpoints.create(spec)
        assert key
        assert [e.name for e in endpoints.list_all()] == ["triage"]
        assert endpoints.following("m") == ["triage"]
        moved = endpoints.follow_promotion("m", "2", "s3://runs/b/final")
        assert endpoints.show("triage").target == moved["triage"]
        endpoints.create_key("triage", "ci")
        endpoints.revoke_key("triage", "ci")
        assert endpoints.show("triage").keys == ["default"]
        endpoints.delete("triage")
    # and nothing beyond: no cluster-wide objects, no other namespace
    forbidden = k8s_cluster.kubectl(
        "auth", "can-i", "create", "clusterroles", f"--as=system:serviceaccount:{ns}:manager",
        check=False,
    )  # fmt: skip
    assert forbidden.stdout.strip() == "no"
    elsewhere = k8s_cluster.kubectl(
        "auth", "can-i", "create", "deployments", "-n", "default",
        f"--as=system:serviceaccount:{ns}:manager", check=False,
    )  # fmt: skip
    assert elsewhere.stdout.strip() == "no"
    with Endpoints(settings) as endpoints, pytest.raises(ServingError, match="no endpoint"):
        endpoints.delete("triage")
