"""Map Kubernetes API failures to :mod:`arkor_ops.errors`, with a hint for what to do.

========  =====================================  ===========================
status    body                                   raised
========  =====================================  ===========================
401/403   —                                      PermissionDeniedError
403       "exceeded quota"                       QuotaExceededError
404       —                                      JobNotFoundError
422       mentions quota / "forbidden: ..."      QuotaExceededError
other     —                                      BackendError
========  =====================================  ===========================

Messages name ``namespace/name``; they never contain the request body, and for Secrets not
even the server's message (it may echo a value). For the same reason :func:`map_api_error`
scrubs the body of a Secret call's ``ApiException`` before it is chained (``raise … from exc``),
so no traceback, ``__cause__`` or ``__context__`` included, prints a Secret's values.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from arkor_ops.errors import (
    BackendError,
    JobNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
)

SCRUBBED = "<not shown: an answer about a Secret may echo its values>"
ROLE_HINT = (
    "the client's Role needs it: apply k8s/ (Role `arkor-ops-client` bound to your "
    "ServiceAccount or user in namespace {ns}), e.g. `kubectl apply -k k8s/base`"
)


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            data = json.loads(body)
        except ValueError:
            return body.strip()[:300]
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return str(data["message"])[:500]
    return str(getattr(exc, "reason", "") or "")


def _is_quota(status: int, message: str) -> bool:
    text = message.lower()
    if status == 403:
        return "exceeded quota" in text or "exceeds quota" in text
    return status == 422 and ("quota" in text or "must specify limits" in text)


def map_api_error(
    exc: Any, *, verb: str, resource: str, namespace: str, name: str | None = None
) -> BackendError:
    """The :mod:`arkor_ops.errors` exception for a failed API call (to ``raise ... from exc``).

    Args:
        exc: the ``kubernetes.client.exceptions.ApiException`` (anything with ``status``,
            ``reason`` and ``body`` works).
        verb: the API verb, e.g. ``create`` or ``get``.
        resource: the resource, e.g. ``jobs`` or ``pods/proxy``.
        namespace: the namespace of the call.
        name: the object's name, when there is one.

    Returns:
        The mapped error, carrying ``status``. For a Secret call, ``exc`` has been scrubbed
        (see :func:`scrub_api_error`).
    """
    status = int(getattr(exc, "status", 0) or 0)
    target = f"{namespace}/{name}" if name else f"namespace {namespace}"
    raw = _server_message(exc)
    secret = resource.startswith("secrets")
    if secret:
        scrub_api_error(exc)
    server = "" if secret else raw
    detail = f": {server}" if server else ""
    if _is_quota(status, raw):
        return QuotaExceededError(
            f"{verb} {resource} {target} refused by a quota{detail}. Hint: "
            f"`kubectl describe resourcequota -n {namespace}` shows what is used; lower the run's "
            "requests (ARKOR_K8S_CPU_REQUEST, MEMORY_REQUEST, GPU_COUNT) or raise the quota.",
            status=status,
        )
    if status == 401:
        return PermissionDeniedError(
            f"{verb} {resource} {target}: the API server rejected the credentials (401). "
            "Hint: the kubeconfig's token or certificate is missing or expired.",
            status=status,
        )
    if status == 403:
        return PermissionDeniedError(
            f"may not {verb} {resource} in {target}{detail}. Hint: "
            + ROLE_HINT.format(ns=namespace),
            status=status,
        )
    if status == 404:
        return JobNotFoundError(
            f"{resource} {target} not found. Hint: check the namespace (ARKOR_K8S_NAMESPACE) and "
            f"`kubectl get jobs -n {namespace} -l app.kubernetes.io/managed-by=arkor-ops`.",
            status=status,
        )
    return BackendError(f"{verb} {resource} {target} failed ({status}){detail}", status=status)


def scrub_api_error(exc: Any) -> None:
    """Drop what an API answer about a Secret may echo of it (body, decoded data), in place.

    Status, reason and headers stay: they say what went wrong without quoting the object. In
    place, because the very exception object is what ``raise … from exc`` chains and what
    Python stores as ``__context__``.

    Args:
        exc: the ``ApiException`` (anything with ``body``/``data`` attributes).
    """
    for attr in ("body", "data"):
        if getattr(exc, attr, None):
            with contextlib.suppress(AttributeError):
                setattr(exc, attr, SCRUBBED)


def map_transport_error(
    exc: BaseException, *, verb: str, resource: str, namespace: str
) -> BackendError:
    """A :class:`BackendError` for a call that never got an HTTP answer (network, TLS).

    Args:
        exc: the urllib3 or OS error.
        verb: the API verb.
        resource: the resource.
        namespace: the namespace.

    Returns:
        The error, without a status.
    """
    return BackendError(
        f"{verb} {resource} in namespace {namespace}: cannot reach the API server "
        f"({type(exc).__name__}). Hint: check the kubeconfig's server and your network."
    )
