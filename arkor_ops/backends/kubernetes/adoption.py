"""Adopting an existing Job by idempotency key: whether it may be adopted, and what it still needs.

Every Prefect flow run submits its run twice (``start_training``, then ``wait_for_training``
submits again with the same key), and a retried task a third time, so adoption is the common
path, not the exception, and the adopted Job is usually running. Two rules follow:

* **Only the run the key named.** The Job must carry this key's hash label and this config's
  hash (:data:`~.manifests.CONFIG_HASH_ANNOTATION`). A key reused with another
  config fails with HTTP 409 naming both hashes: following the old run would hand the caller a
  result trained on something else.
* **Never delete what this call did not create.** Completing an adopted Job (its ConfigMap or
  Secret missing, still suspended) may fail (API 5xx, timeout, 403 or quota on the ConfigMap or
  Secret); the error propagates and the Job stays. Only a Job the same ``submit`` created is
  deleted on failure (see :meth:`~arkor_ops.backends.kubernetes.KubernetesBackend.submit`).

A Job that has finished, or whose Secret was already deleted because its run ended
(:mod:`.run_secret`), is adopted as it is: creating its objects again would bring
back a Secret that nothing deletes any more.
"""

from __future__ import annotations

from typing import Any

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.backends.kubernetes.diagnostics import diagnose
from arkor_ops.config import TrainerConfig
from arkor_ops.errors import BackendError
from arkor_ops.evaluation import EvaluationConfig


def check_adoptable(
    job: dict[str, Any],
    *,
    namespace: str,
    idempotency_key: str,
    config: TrainerConfig | EvaluationConfig,
) -> None:
    """Refuse a Job this key and this config did not make.

    Args:
        job: the existing Job (camelCase dict).
        namespace: its namespace, for the message.
        idempotency_key: the key of this submit.
        config: the config of this submit.

    Raises:
        BackendError: (status 409) another key made the Job, or this key with another config;
            the message names ``namespace/name`` and, for a config, both config hashes.
    """
    meta = job.get("metadata") or {}
    target = f"{namespace}/{meta.get('name')}"
    if (meta.get("labels") or {}).get(m.IDEMPOTENCY_LABEL) != m.key_hash(idempotency_key):
        raise BackendError(
            f"Job {target} exists but was not created with this idempotency key; "
            "choose another run name or key",
            status=409,
        )
    theirs = (meta.get("annotations") or {}).get(m.CONFIG_HASH_ANNOTATION)
    ours = config.config_hash()
    if theirs != ours:
        raise BackendError(
            f"idempotency key already used for Job {target} with config hash {theirs}, but "
            f"this config's hash is {ours}: a key names one run of one config. Reuse the key "
            "only with the same config, or submit with a new key.",
            status=409,
        )


def needs_completing(job: dict[str, Any]) -> bool:
    """Whether an adopted Job may still need its ConfigMap, Secret or resume.

    False once the Job has finished or its run's Secret was deleted (the run has ended).
    """
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    if m.SECRET_DELETED_ANNOTATION in annotations:
        return False
    return not diagnose(job, [], []).terminal
