"""The dataset watcher and the dataset-update trigger, with S3 on moto and a real server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.flows.helpers import eventually, tiny_config

pytestmark = [pytest.mark.prefect, pytest.mark.s3]


async def _retrain_runs(client: Any, deployment_id: uuid.UUID) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    return list(
        await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    )


async def test_each_new_version_triggers_exactly_one_retrain(
    prefect_server: str, s3_bucket: str, s3_server: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    from arkor_ops.config import validate_config
    from arkor_ops.flows.deploy import build_deployments
    from arkor_ops.flows.watcher import watch_datasets

    s3 = s3_server.client()
    key = "datasets/train.jsonl"
    uri = f"s3://{s3_bucket}/{key}"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=b'{"text": "v1"}\n')

    suffix = "-" + uuid.uuid4().hex[:8]
    watched = [f"s3://{s3_bucket}/datasets/"]
    deployments = build_deployments(
        retrain_config=validate_config(tiny_config("/data/train.jsonl")),
        watched=watched,
        suffix=suffix,
    )
    (retrain,) = [d for d in deployments if d.name.startswith("retrain-on-dataset-update")]
    retrain_id = await retrain.aapply()
    await asyncio.sleep(2)  # the triggers service loads the new automation
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    async with get_client() as client:
        announced = await watch_datasets(watched, state_prefix=prefix)
        assert [a["uri"] for a in announced] == [uri]
        EventsWorker.drain_all()
        runs = await eventually(lambda: _retrain_runs(client, retrain_id), timeout=30)
        assert len(runs) == 1
        assert runs[0].parameters["dataset_uri"] == uri
        assert runs[0].parameters["dataset_version"] == announced[0]["version"]
        assert runs[0].parameters["config"]["name"] == "flow-test"

        # the same version seen again: nothing announced, no run
        assert await watch_datasets(watched, state_prefix=prefix) == []
        EventsWorker.drain_all()
        await asyncio.sleep(3)
        assert len(await _retrain_runs(client, retrain_id)) == 1

        # a new object version: exactly one more run, for that version
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b'{"text": "v2"}\n')
        (second,) = await watch_datasets(watched, state_prefix=prefix)
        assert second["version"] != announced[0]["version"]
        EventsWorker.drain_all()

        async def two_runs() -> list[Any]:
            runs = await _retrain_runs(client, retrain_id)
            return runs if len(runs) >= 2 else []

        runs = await eventually(two_runs, timeout=30)
        await asyncio.sleep(2)
        runs = await _retrain_runs(client, retrain_id)
        assert len(runs) == 2
        assert {r.parameters["dataset_version"] for r in runs} == {
            announced[0]["version"],
            second["version"],
        }


async def test_the_trigger_starts_runs_only_for_watched_uris(
    prefect_server: str, s3_bucket: str
) -> None:
    """Any API client may emit the event: one naming an unwatched URI (in the resource id, or
    only in the URI label the run's ``dataset_uri`` comes from) starts nothing."""
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from arkor_ops.config import validate_config
    from arkor_ops.flows.deploy import build_deployments
    from arkor_ops.flows.watcher import EVENT, RESOURCE_PREFIX, URI_LABEL, VERSION_LABEL

    suffix = "-" + uuid.uuid4().hex[:8]
    watched = f"s3://{s3_bucket}/datasets/"
    deployments = build_deployments(
        retrain_config=validate_config(tiny_config("/data/train.jsonl")),
        watched=[watched, f"s3://{s3_bucket}/exact.jsonl"],
        suffix=suffix,
    )
    (retrain,) = [d for d in deployments if d.name.startswith("retrain-on-dataset-update")]
    retrain_id = await retrain.aapply()
    await asyncio.sleep(2)  # the triggers service loads the new automation

    def emit(resource_uri: str, label_uri: str, version: str) -> None:
        emit_event(
            event=EVENT,
            resource={
                "prefect.resource.id": RESOURCE_PREFIX + resource_uri,
                URI_LABEL: label_uri,
                VERSION_LABEL: version,
            },
        )

    elsewhere = f"s3://attacker-{uuid.uuid4().hex[:6]}/poisoned.jsonl"
    emit(elsewhere, elsewhere, "spoof-1")  # an unwatched dataset
    emit(f"{watched}ok.jsonl", elsewhere, "spoof-2")  # a watched id, an unwatched URI label
    emit(f"s3://{s3_bucket}/exact.jsonl.bak", f"s3://{s3_bucket}/exact.jsonl.bak", "spoof-3")
    emit(f"{watched}real.jsonl", f"{watched}real.jsonl", "v1")  # the one that counts
    EventsWorker.drain_all()
    async with get_client() as client:
        runs = await eventually(lambda: _retrain_runs(client, retrain_id), timeout=30)
        await asyncio.sleep(3)  # the earlier events were evaluated before this one
        runs = await _retrain_runs(client, retrain_id)
    assert [(r.parameters["dataset_uri"], r.parameters["dataset_version"]) for r in runs] == [
        (f"{watched}real.jsonl", "v1")
    ]


def test_a_dataset_uri_that_climbs_out_of_its_prefix_is_refused() -> None:
    from arkor_ops.config import validate_config
    from arkor_ops.flows.training import with_dataset

    config = validate_config(tiny_config("/data/train.jsonl"))
    for uri in ("s3://bucket/datasets/../private/x.jsonl", "file:///data/./../etc/passwd"):
        with pytest.raises(ValueError, match=r"'\.\.' path segment"):
            with_dataset(config, uri)
    assert with_dataset(config, "s3://bucket/datasets/x.jsonl").dataset.uri == (  # type: ignore[union-attr]
        "s3://bucket/datasets/x.jsonl"
    )
