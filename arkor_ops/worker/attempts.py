"""Counting the pods a run has started, so that disruptions are not retried forever.

The Job's ``podFailurePolicy`` ignores pods that end with the ``DisruptionTarget`` condition
(evictions, preemptions, drains), so they never spend ``backoffLimit``. That is right for a
spot node taken away once, but an eviction that repeats for the same reason (the pod fills its
disk and kubelet evicts it for ``ephemeral-storage``; a node pool that keeps preempting it)
would be retried for free until ``activeDeadlineSeconds``. Kubernetes cannot count ignored
pods, and the worker has no API access, so each worker start counts itself in storage
(``{run}/attempts.json``) and refuses to train once the run has restarted more often than
``ARKOR_MAX_RESTARTS`` (Kubernetes: ``ARKOR_K8S_MAX_POD_RESTARTS``). Its exit code 2 fails the
Job at once (``FailJob``). Unset (local runs): nothing is counted.
"""

from __future__ import annotations

import json
import logging
import time

from arkor_ops.errors import StorageError
from arkor_ops.storage import RunLayout, Storage, join_uri
from arkor_ops.worker.errors import RestartLimitError

log = logging.getLogger(__name__)

ATTEMPTS_NAME = "attempts.json"


def count_attempt(storage: Storage, layout: RunLayout, max_restarts: int | None) -> int:
    """Record this worker start; returns its number (1 = the first pod).

    Args:
        storage: where the run lives.
        layout: the run's layout.
        max_restarts: restarts allowed after the first start; None counts nothing.

    Raises:
        RestartLimitError: this start is restart number ``max_restarts + 1``.
        StorageError: the count cannot be read or written (retryable).
    """
    if max_restarts is None:
        return 1
    uri = join_uri(layout.root, ATTEMPTS_NAME)
    starts: list[float] = []
    if storage.exists(uri):
        try:
            data = json.loads(storage.get_bytes(uri))
            starts = [float(t) for t in data.get("starts", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise StorageError(f"{uri} is not a start count: {exc}") from None
    starts.append(time.time())
    storage.put_bytes(uri, json.dumps({"starts": starts}).encode())
    attempt = len(starts)
    if attempt > 1:
        log.warning(
            "pod start %d of this run (restart %d of %d allowed)",
            attempt,
            attempt - 1,
            max_restarts,
        )
    if attempt - 1 > max_restarts:
        raise RestartLimitError(
            f"giving up: this run's pod has been restarted {attempt - 1} times (the limit is "
            f"ARKOR_MAX_RESTARTS={max_restarts}, on Kubernetes ARKOR_K8S_MAX_POD_RESTARTS). "
            "Evictions, preemptions, node losses or crashes keep ending it; the previous pods' "
            "events say why (kubectl describe pod / kubectl get events), e.g. ephemeral-storage "
            "or memory over its limit"
        )
    return attempt
