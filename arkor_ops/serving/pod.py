"""An endpoint's pod: ``python -m arkor_ops.serving.pod``, run by the Deployment of
:mod:`arkor_ops.serving.cluster`.

1. The base model (``ARKOR_ENDPOINT_BASE_MODEL``: an ``s3://`` folder, a Hub id, resolved to
   its commit once, or a path) is fetched into the model cache, as a run's worker does.
2. A :class:`~arkor_ops.serving.endpoint.LocalEndpoint` starts on ``0.0.0.0:PORT``:
   llama-server and the gateway, with the keys of the endpoint's Secret.
3. Every ``ARKOR_ENDPOINT_POLL_SECONDS``, the pod reads its ConfigMap's ``target.json`` and its
   Secret's ``keys.jsonl`` through the API. A new target is deployed by the hot swap (the old
   version answers until the new one does); a deployed one is a Normal Event ``Swapped`` on the
   Deployment, a refused one (its adapter fails its manifest, does not convert or load) a Warning
   Event ``AdapterRefused``, logged, and not tried again until the target changes. New keys
   are in use, and revoked ones refused, from the next read on.
4. SIGTERM stops the gateway and the engine (exit 0).

With ``ARKOR_ENDPOINT_ENGINE=vllm`` the engine is the pod's vLLM container (the GPU path,
:mod:`arkor_ops.serving.vllm`): the init container ``python -m arkor_ops.serving.pod fetch-base
DIR`` fetches the base model (step 1) into a folder vLLM serves, and step 2 starts only the
gateway, in front of vLLM; adapters are loaded into vLLM as PEFT wrote them.

``/health`` answers 200 once a version serves: the readiness probe, so the Service sends
nothing to a pod that cannot answer yet.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arkor_ops.backends.kubernetes.client import load_configuration
from arkor_ops.errors import ArkorOpsError, ServingError
from arkor_ops.serving.cluster import (
    KEYS_KEY,
    TARGET_KEY,
    Target,
    decode_data,
    keys_secret,
    object_name,
)
from arkor_ops.serving.endpoint import LocalEndpoint
from arkor_ops.serving.keys import KeySet, parse_records
from arkor_ops.serving.vllm import VllmServer
from arkor_ops.settings import EndpointPodSettings, KubernetesSettings, read
from arkor_ops.settings.worker import HubEnvSettings, model_cache_dir

log = logging.getLogger("arkor_ops.serving.pod")


def base_model_dir(name: str, cache: Path) -> Path:
    """The base model's folder, fetched into ``cache`` (the worker's resolution)."""
    from arkor_ops.worker.hub import HubRef, resolve_commit
    from arkor_ops.worker.models import is_local, resolve_model

    hub_env = read(HubEnvSettings)
    hub = None
    commit = None
    if not is_local(name) and not hub_env.hub_offline:
        token = hub_env.hf_token.get_secret_value() if hub_env.hf_token else None
        hub = HubRef(
            repo_id=name,
            repo_type="model",
            revision=None,
            token=token,
            endpoint=hub_env.hub_endpoint,
            token_variable=hub_env.hf_token_setting,
        )
        commit = resolve_commit(hub)
    resolved = resolve_model(name, cache, hub=hub, commit=commit)
    log.info("base model %s: %s (%s)", name, resolved.path, resolved.how)
    return resolved.path


class Pod:
    """One endpoint pod: the endpoint, and the loop that follows its target and keys."""

    def __init__(
        self, settings: EndpointPodSettings, endpoint: LocalEndpoint, keys: KeySet
    ) -> None:
        from kubernetes import client

        self.settings = settings
        self.endpoint = endpoint
        self.keys = keys
        self._api = client.ApiClient(load_configuration(KubernetesSettings()))
        self.core: Any = client.CoreV1Api(self._api)
        self.apps: Any = client.AppsV1Api(self._api)
        self.applied: Target | None = None  # the last target deployed or refused
        self._uid: str | None = None

    def read_keys(self) -> None:
        """Use the Secret's keys (kept as they were when the API does not answer)."""
        from kubernetes.client.exceptions import ApiException

        name = keys_secret(self.settings.name)
        try:
            secret = self.core.read_namespaced_secret(name, self.settings.namespace)
        except ApiException as exc:
            log.warning("could not read the keys (Secret %s): %s %s", name, exc.status, exc.reason)
            return
        records = parse_records(decode_data((secret.data or {}).get(KEYS_KEY, "")))
        names = sorted(r.name for r in records)
        if names != sorted(r.name for r in self.keys.records()):
            log.info("keys in use: %s", ", ".join(names) or "none (every request gets 401)")
        self.keys.replace(records)

    def read_target(self) -> Target | None:
        """The ConfigMap's target, or None when it cannot be read (logged)."""
        from kubernetes.client.exceptions import ApiException

        name = object_name(self.settings.name)
        try:
            cm = self.core.read_namespaced_config_map(name, self.settings.namespace)
            return Target.from_json((cm.data or {}).get(TARGET_KEY, ""))
        except ApiException as exc:
            log.warning(
                "could not read the target (ConfigMap %s): %s %s", name, exc.status, exc.reason
            )
        except ArkorOpsError as exc:
            log.warning("ConfigMap %s: %s", name, exc)
        return None

    def sync(self) -> None:
        """One look: the keys, then the target (deployed when it changed)."""
        self.read_keys()
        target = self.read_target()
        if target is None or target == self.applied:
            return
        self.applied = target
        try:
            self.endpoint.deploy(target.version, target.adapter)
        except ArkorOpsError as exc:
            serving = self.endpoint.serving
            self.event(
                "Warning",
                "AdapterRefused",
                f"version {target.version} refused (request {target.request}), "
                f"{f'version {serving}' if serving else 'nothing'} keeps serving: {exc}",
            )
            return
        self.event(
            "Normal",
            "Swapped",
            f"version {target.version} serves (request {target.request}): {target.adapter}",
        )

    def event(self, kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the endpoint's Deployment (and the same line in the log)."""
        from kubernetes.client.exceptions import ApiException

        (log.warning if kind == "Warning" else log.info)("%s: %s", reason, message)
        ns, name = self.settings.namespace, object_name(self.settings.name)
        try:
            if self._uid is None:
                self._uid = self.apps.read_namespaced_deployment(name, ns).metadata.uid
            now = datetime.now(UTC)
            self.core.create_namespaced_event(
                ns,
                {
                    "metadata": {"generateName": f"{name}.", "namespace": ns},
                    "involvedObject": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": name,
                        "namespace": ns,
                        "uid": self._uid,
                    },
                    "type": kind,
                    "reason": reason,
                    "message": message[:1024],
                    "source": {"component": "arkor-ops-endpoint"},
                    "firstTimestamp": now.isoformat(),
                    "lastTimestamp": now.isoformat(),
                    "count": 1,
                },
            )
        except ApiException as exc:
            log.warning("could not record the event %s: %s %s", reason, exc.status, exc.reason)

    def run(self, stop: threading.Event) -> None:
        """:meth:`sync` every ``poll_seconds`` until ``stop`` is set."""
        while not stop.is_set():
            self.sync()
            stop.wait(self.settings.poll_seconds)

    def close(self) -> None:
        """Close the API connections."""
        self._api.close()  # type: ignore[no-untyped-call]


def fetch_base(dest: Path) -> int:
    """The init container of a vLLM endpoint: the base model, linked into ``dest`` for vLLM."""
    settings = read(EndpointPodSettings)
    source = base_model_dir(settings.base_model, model_cache_dir())
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, copy_function=_link_or_copy)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    log.info("base model %s ready for vLLM at %s", settings.base_model, dest)
    return 0


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _endpoint(settings: EndpointPodSettings, keys: KeySet) -> LocalEndpoint:
    vllm = None
    if settings.engine == "vllm":
        if settings.base_dir is None:
            raise ServingError("ARKOR_ENDPOINT_BASE_DIR is not set (the init container's folder)")
        base = settings.base_dir
        vllm = VllmServer(settings.engine_url, f"{settings.name}@base")
    else:
        base = base_model_dir(settings.base_model, model_cache_dir())
    return LocalEndpoint(
        settings.name,
        base,
        settings.workdir,
        auth=settings.auth,
        host="0.0.0.0",  # noqa: S104 - the pod's own address; the Service and probes reach it
        port=settings.port,
        vocab_pre=settings.vocab_pre,
        threads=settings.threads,
        verify=keys.verify,
        vllm=vllm,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the endpoint until SIGTERM (exit 2 when it cannot start); ``fetch-base DIR``: the
    vLLM init container's step."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = sys.argv[1:] if argv is None else argv
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if args[:1] == ["fetch-base"] and len(args) == 2:
            return fetch_base(Path(args[1]))
        settings = read(EndpointPodSettings)
        keys = KeySet()
        endpoint = _endpoint(settings, keys)
        t0 = time.monotonic()
        endpoint.start()
    except ArkorOpsError as exc:
        log.error("the endpoint cannot start: %s", exc)
        return 2
    log.info(
        "endpoint %s (%s) listens on port %s (started in %.1f s)",
        settings.name,
        settings.engine,
        endpoint.port,
        time.monotonic() - t0,
    )
    pod = Pod(settings, endpoint, keys)
    try:
        pod.run(stop)
    finally:
        pod.close()
        endpoint.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
