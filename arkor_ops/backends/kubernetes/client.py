"""API access for the backend: the official client behind ``asyncio.to_thread``, plain dicts out.

:class:`KubeApi` wraps the few calls a run needs. Every call runs in a worker thread, maps
``ApiException`` through :func:`.errors.map_api_error` and returns camelCase dicts
(read with ``_preload_content=False``, so nothing is lost to model conversion).
:func:`httpx_client` builds an httpx client with the same credentials for the pod proxy stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from arkor_ops.backends.kubernetes.errors import map_api_error, map_transport_error
from arkor_ops.errors import BackendError
from arkor_ops.settings import KubeconfigSettings, KubernetesSettings

log = logging.getLogger(__name__)


def load_configuration(settings: KubernetesSettings) -> Any:
    """A fresh ``kubernetes.client.Configuration`` for the settings' kubeconfig/context.

    Args:
        settings: ``kubeconfig`` (default ``$KUBECONFIG`` or ``~/.kube/config``) and ``context``;
            without any kubeconfig file, the in-cluster service account is used.

    Returns:
        The configuration (never the process-wide default).

    Raises:
        BackendError: no usable kubeconfig and not inside a cluster.
    """
    from kubernetes import client, config

    cfg = client.Configuration()
    path = settings.kubeconfig or KubeconfigSettings().first_path()
    default = Path.home() / ".kube" / "config"
    try:
        if path or default.exists():
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path or str(default),
                context=settings.context,
                client_configuration=cfg,
            )
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        raise BackendError(
            f"no usable Kubernetes credentials ({type(exc).__name__}: {exc}). Hint: set "
            "ARKOR_K8S_KUBECONFIG / KUBECONFIG, or run inside a pod with a ServiceAccount."
        ) from exc
    return cfg


def bearer_header(cfg: Any) -> dict[str, str]:
    """The ``Authorization`` header of a Configuration (refreshing an expiring token)."""
    token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix(
        "authorization"
    )
    if not token:
        return {}
    token = str(token)
    return {"Authorization": token if token.lower().startswith("bearer ") else f"Bearer {token}"}


def httpx_client(cfg: Any, *, read_timeout: float = 60.0) -> httpx.AsyncClient:
    """An httpx client that talks to the API server with ``cfg``'s host, TLS and credentials.

    Args:
        cfg: a ``kubernetes.client.Configuration``.
        read_timeout: seconds without a byte before a stream read fails (the sidecar pings).

    Returns:
        The client; its base URL is the API server. The bearer token is set per request with
        :func:`bearer_header`, so refreshed tokens are used.
    """
    verify: ssl.SSLContext | bool = False
    if cfg.verify_ssl:
        ctx = (
            ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if cfg.ssl_ca_cert
            else (ssl.create_default_context())
        )
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
        verify = ctx
    timeout = httpx.Timeout(10.0, read=read_timeout)
    return httpx.AsyncClient(
        base_url=cfg.host, verify=verify, timeout=timeout, proxy=cfg.proxy or None, trust_env=False
    )


class KubeApi:
    """The API calls of one backend, async, with errors mapped to :mod:`arkor_ops.errors`."""

    def __init__(self, cfg: Any, namespace: str) -> None:
        from kubernetes import client

        self.cfg = cfg
        self.namespace = namespace
        self.api_client = client.ApiClient(cfg)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    async def call(
        self,
        verb: str,
        resource: str,
        fn: Callable[..., Any],
        *args: Any,
        name: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` in a thread; the raw JSON answer as a dict.

        Raises:
            BackendError: (or a subclass) mapped from the API error.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        def run() -> Any:
            resp = fn(*args, _preload_content=False, **kwargs)
            data = resp.data
            return json.loads(data) if data else {}

        try:
            return await asyncio.to_thread(run)
        except ApiException as exc:
            raise map_api_error(
                exc, verb=verb, resource=resource, namespace=self.namespace, name=name
            ) from exc
        except (HTTPError, OSError) as exc:
            raise map_transport_error(
                exc, verb=verb, resource=resource, namespace=self.namespace
            ) from exc

    # -- jobs ---------------------------------------------------------------------------------

    async def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Job, ConfigMap or Secret from a dict; returns the created object."""
        from kubernetes import client

        name = body["metadata"]["name"]
        ns = self.namespace
        if kind == "jobs":
            obj = client.V1Job.model_validate(body)
            return dict(
                await self.call(
                    "create", kind, self.batch.create_namespaced_job, ns, obj, name=name
                )
            )
        if kind == "configmaps":
            cm = client.V1ConfigMap.model_validate(body)
            fn = self.core.create_namespaced_config_map
            return dict(await self.call("create", kind, fn, ns, cm, name=name))
        try:
            secret = client.V1Secret.model_validate(body)
        except ValueError:  # a validation error quotes its input: the values
            msg = f"the Secret {ns}/{name} is malformed (its values are not shown)"
            raise BackendError(msg) from None
        create_secret = self.core.create_namespaced_secret
        return dict(await self.call("create", kind, create_secret, ns, secret, name=name))

    async def get_job(self, name: str) -> dict[str, Any]:
        """The Job ``name``. Raises JobNotFoundError when it does not exist."""
        return dict(
            await self.call(
                "get", "jobs", self.batch.read_namespaced_job, name, self.namespace, name=name
            )
        )

    async def list_jobs(self, selector: str) -> list[dict[str, Any]]:
        """Jobs matching a label selector."""
        fn = self.batch.list_namespaced_job
        data = await self.call("list", "jobs", fn, self.namespace, label_selector=selector)
        return list(data.get("items") or [])

    async def patch_job(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the Job ``name``."""
        fn = self.batch.patch_namespaced_job
        return dict(
            await self.call(
                "patch", "jobs", fn, name, self.namespace, patch, name=name,
                _content_type="application/merge-patch+json",
            )
        )  # fmt: skip

    async def patch_pod(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the pod ``name`` (the cancel annotation)."""
        fn = self.core.patch_namespaced_pod
        return dict(
            await self.call(
                "patch", "pods", fn, name, self.namespace, patch, name=name,
                _content_type="application/merge-patch+json",
            )
        )  # fmt: skip

    async def delete(self, kind: str, name: str, *, grace_seconds: int | None = None) -> None:
        """Delete a Job (foreground), ConfigMap or Secret."""
        from kubernetes import client

        ns = self.namespace
        if kind == "jobs":
            opts = client.V1DeleteOptions(
                propagation_policy="Foreground", grace_period_seconds=grace_seconds
            )
            await self.call(
                "delete", kind, self.batch.delete_namespaced_job, name, ns, body=opts, name=name
            )
        elif kind == "configmaps":
            await self.call(
                "delete", kind, self.core.delete_namespaced_config_map, name, ns, name=name
            )
        else:
            await self.call("delete", kind, self.core.delete_namespaced_secret, name, ns, name=name)

    # -- pods and events ----------------------------------------------------------------------

    async def job_pods(self, job: str) -> list[dict[str, Any]]:
        """Pods of the Job ``job`` (by the ``batch.kubernetes.io/job-name`` label)."""
        fn = self.core.list_namespaced_pod
        sel = f"batch.kubernetes.io/job-name={job}"
        data = await self.call("list", "pods", fn, self.namespace, label_selector=sel)
        return list(data.get("items") or [])

    async def events(self, names: list[str]) -> list[dict[str, Any]]:
        """Events about the objects called ``names`` (the Job and its pods)."""
        fn = self.core.list_namespaced_event
        out: list[dict[str, Any]] = []
        for name in names:
            sel = f"involvedObject.name={name}"
            data = await self.call("list", "events", fn, self.namespace, field_selector=sel)
            out.extend(data.get("items") or [])
        return out

    async def evict(self, pod: str) -> None:
        """Evict a pod through the Eviction API (sets the DisruptionTarget condition)."""
        from kubernetes import client

        body = client.V1Eviction.model_validate(
            {"metadata": {"name": pod, "namespace": self.namespace}}
        )
        fn = self.core.create_namespaced_pod_eviction
        await self.call("create", "pods/eviction", fn, pod, self.namespace, body, name=pod)

    def close(self) -> None:
        """Close the connection pool."""
        self.api_client.close()  # type: ignore[no-untyped-call]
