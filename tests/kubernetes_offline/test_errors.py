"""Kubernetes API failures mapped to arkor-ops errors, with hints and no secrets."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from arkor_ops.backends.kubernetes.errors import map_api_error
from arkor_ops.errors import (
    BackendError,
    JobNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
)


def api_error(status: int, message: str) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message, "code": status})
    return exc


def test_forbidden_names_verb_resource_namespace_and_the_role() -> None:
    msg = 'jobs.batch is forbidden: User "system:serviceaccount:a:b" cannot create resource "jobs"'
    err = map_api_error(
        api_error(403, msg), verb="create", resource="jobs", namespace="ml", name="r-1"
    )
    assert isinstance(err, PermissionDeniedError) and err.status == 403
    text = str(err)
    assert "create jobs" in text and "ml/r-1" in text
    assert "arkor-ops-client" in text and "k8s/" in text


def test_unauthorized() -> None:
    err = map_api_error(api_error(401, "Unauthorized"), verb="get", resource="jobs", namespace="ml")
    assert isinstance(err, PermissionDeniedError) and err.status == 401
    assert "expired" in str(err)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, 'pods "x" is forbidden: exceeded quota: gpu-quota, requested: nvidia.com/gpu=1'),
        (422, "Job is invalid: must specify limits.memory for quota"),
    ],
)
def test_quota(status: int, message: str) -> None:
    err = map_api_error(
        api_error(status, message), verb="create", resource="jobs", namespace="ml", name="r"
    )
    assert isinstance(err, QuotaExceededError) and err.status == status
    assert "kubectl describe resourcequota -n ml" in str(err)


def test_not_found() -> None:
    err = map_api_error(
        api_error(404, 'jobs.batch "r" not found'),
        verb="get",
        resource="jobs",
        namespace="ml",
        name="r",
    )
    assert isinstance(err, JobNotFoundError)
    assert "ml/r" in str(err) and "ARKOR_K8S_NAMESPACE" in str(err)


def test_other_statuses_and_chaining() -> None:
    source = api_error(500, "etcdserver: request timed out")
    err = map_api_error(source, verb="create", resource="jobs", namespace="ml", name="r")
    assert type(err) is BackendError and err.status == 500
    assert "etcdserver" in str(err)
    with pytest.raises(BackendError) as info:
        try:
            raise source
        except ApiException as exc:
            raise map_api_error(exc, verb="create", resource="jobs", namespace="ml") from exc
    assert info.value.__cause__ is source


def test_secret_errors_never_echo_the_server_message() -> None:
    exc = api_error(422, 'Secret "s" is invalid: data[TOKEN]: Invalid value: "hunter2-secret"')
    err = map_api_error(exc, verb="create", resource="secrets", namespace="ml", name="s")
    assert "hunter2" not in str(err)
    assert "ml/s" in str(err)
