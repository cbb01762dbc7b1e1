"""An API error about a run's Secret never prints the Secret's values, in any part of the
traceback (``__cause__`` and ``__context__`` included).

The real API server echoes a Secret value here through a ValidatingAdmissionPolicy whose
message quotes ``object.data`` (base64, as stored: a value all the same), as an admission
webhook or policy of a real cluster may.
"""

from __future__ import annotations

import base64
import json
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from arkor_ops.backends.kubernetes import KubernetesBackend
from arkor_ops.config import validate_config
from arkor_ops.errors import BackendError
from tests.fixtures.cluster import K8sCluster
from tests.kubernetes.helpers import HF_TOKEN

pytestmark = [pytest.mark.cluster, pytest.mark.s3, pytest.mark.timeout(300)]

#: The value as the API server stores it (``data`` is base64), which is what the policy quotes.
STORED = base64.b64encode(HF_TOKEN.encode()).decode()


@pytest.fixture
def echoing_policy(k8s_cluster: K8sCluster, k8s_namespace: str) -> Iterator[str]:
    """A policy that refuses Secrets with an HF_TOKEN in the test namespace, quoting it."""
    name = f"echo-{k8s_namespace}"[:63]
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["secrets"],
                    }
                ]
            },
            "validations": [
                {
                    # only Secrets carrying HF_TOKEN (the run's), not the S3 keys
                    "expression": "!has(object.data) || !('HF_TOKEN' in object.data)",
                    "messageExpression": "'refused, HF_TOKEN is ' + "
                    "string(object.data['HF_TOKEN'])",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": k8s_namespace}}
            },
        },
    }
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(policy))
    k8s_cluster.kubectl("apply", "-f", "-", input=json.dumps(binding))
    # the policy is live once the API server refuses (and echoes) a plain Secret
    probe = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "probe", "namespace": k8s_namespace},
            "stringData": {"HF_TOKEN": HF_TOKEN},
        }
    )
    for _ in range(60):
        done = k8s_cluster.kubectl("create", "-f", "-", input=probe, check=False)
        if STORED in done.stderr:
            break
        if done.returncode == 0:
            k8s_cluster.kubectl("delete", "secret", "probe", "-n", k8s_namespace)
        time.sleep(0.5)
    else:
        raise AssertionError(f"the policy never refused a Secret: {done.stderr}")
    yield name
    k8s_cluster.kubectl("delete", "validatingadmissionpolicybinding", name, check=False)
    k8s_cluster.kubectl("delete", "validatingadmissionpolicy", name, check=False)


async def test_a_refused_secret_never_prints_its_value_in_the_traceback(
    echoing_policy: str,
    backend: KubernetesBackend,
    k8s_cluster: K8sCluster,
    k8s_namespace: str,
    run_config: Callable[..., dict[str, Any]],
) -> None:
    with pytest.raises(BackendError) as info:
        await backend.submit(validate_config(run_config()))
    error = info.value
    printed = "".join(traceback.format_exception(error))
    assert "secrets" in str(error) and k8s_namespace in str(error), printed
    forms = (HF_TOKEN, STORED)
    assert not any(form in printed for form in forms), printed
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for link in chain:
        text = f"{link!r} {link} {getattr(link, 'body', '')} {getattr(link, 'data', '')}"
        assert not any(form in text for form in forms), type(link)
    # the Job this submit created goes, with whatever it owned
    deadline = time.monotonic() + 30
    while k8s_cluster.kubectl("get", "jobs", "-n", k8s_namespace, "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, "the failed submit left its Job behind"
        time.sleep(0.5)
