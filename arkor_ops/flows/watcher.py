"""The dataset watcher: emit ``arkor-ops.dataset.updated`` once per new dataset version.

Each watched entry is a dataset URI:

* ``s3://bucket/key`` (one object) or ``s3://bucket/prefix/`` (every object under it): the
  version is the S3 version id, else the ETag;
* ``file:///path`` or ``file:///dir/``: the modification time (local development);
* ``hf://datasets/owner/name``: the Hub revision (commit sha), when a hub is reachable; an
  unreachable hub is logged and skipped.

What it has seen lives in Prefect itself: one Variable per dataset (``<prefix>-<hash>``) holding
``{"uri": …, "version": …}``. The event id is derived from (uri, version), so even a watcher
that dies between emitting and recording re-sends the same event, not a new one.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from prefect import flow
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.variables import Variable

from arkor_ops.storage import open_storage

EVENT = "arkor-ops.dataset.updated"
RESOURCE_PREFIX = "arkor-ops.dataset."
URI_LABEL = "arkor-ops.dataset.uri"
VERSION_LABEL = "arkor-ops.dataset.version"


def dataset_versions(watched: str) -> dict[str, str]:
    """The current version of each dataset that ``watched`` names (empty when none exists)."""
    if watched.startswith("hf://datasets/"):
        return {watched: _hub_revision(watched[len("hf://datasets/") :])}
    storage = open_storage(watched)
    uris = storage.list(watched) if watched.endswith("/") else [watched]
    versions = {uri: storage.version(uri) for uri in uris}
    return {uri: version for uri, version in versions.items() if version}


def _hub_revision(name: str) -> str:
    from huggingface_hub import HfApi

    sha = HfApi().dataset_info(name).sha
    if not sha:
        raise LookupError(f"the hub reports no revision for {name}")
    return str(sha)


def variable_name(prefix: str, uri: str) -> str:
    """The Prefect Variable that remembers the last version seen of ``uri``."""
    return f"{prefix}-{hashlib.sha256(uri.encode()).hexdigest()[:24]}"


def event_id(uri: str, version: str) -> uuid.UUID:
    """A stable event id for one dataset version."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{uri}#{version}")


def announce(uri: str, version: str) -> None:
    """Emit the ``arkor-ops.dataset.updated`` event for ``uri`` at ``version``."""
    emit_event(
        event=EVENT,
        resource={
            "prefect.resource.id": RESOURCE_PREFIX + uri,
            "prefect.resource.name": uri,
            URI_LABEL: uri,
            VERSION_LABEL: version,
        },
        payload={"uri": uri, "version": version},
        id=event_id(uri, version),
    )


@flow(name="watch-datasets")
async def watch_datasets(
    datasets: list[str], state_prefix: str = "arkor-ops-dataset"
) -> list[dict[str, Any]]:
    """Check each watched dataset's version; announce every version not seen before.

    Args:
        datasets: dataset URIs (`s3://bucket/key`, `s3://bucket/prefix/`, `file:///…`,
            `hf://datasets/owner/name`).
        state_prefix: name prefix of the Prefect Variables that remember the versions seen.

    Returns:
        The announced updates, as `{"uri": …, "version": …}`.
    """
    log = get_run_logger()
    announced: list[dict[str, Any]] = []
    for watched in datasets:
        try:
            current = dataset_versions(watched)
        except Exception as exc:  # one unreachable source must not hide the others
            log.warning("Cannot read the version of %s: %s", watched, exc)
            continue
        for uri, version in sorted(current.items()):
            name = variable_name(state_prefix, uri)
            seen = await Variable.aget(name)
            if isinstance(seen, dict) and seen.get("version") == version:
                continue
            announce(uri, version)
            await Variable.aset(name, {"uri": uri, "version": version}, overwrite=True)
            log.info("Dataset %s has a new version %s: announced", uri, version)
            announced.append({"uri": uri, "version": version})
    return announced
