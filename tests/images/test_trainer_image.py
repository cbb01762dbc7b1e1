"""The worker inside the trainer image, run as the Job runs it (runc, the Job's user, read-only
root filesystem, the Job's volumes and memory limit), on the tiny model, to completion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.backends.kubernetes.manifests import RunObjects, build_run
from arkor_ops.config import validate_config
from arkor_ops.eventlog import read_events
from arkor_ops.settings import KubernetesSettings
from arkor_ops.storage import open_storage
from tests.fixtures.s3 import S3Server
from tests.images.helpers import job_container
from tools.k8senv import oci

pytestmark = [pytest.mark.images, pytest.mark.s3, pytest.mark.train]

S3_SECRET = "arkor-ops-s3"


def _run(
    image: str, s3: S3Server, bucket: str, model: str, **settings: Any
) -> tuple[RunObjects, dict[str, dict[str, str]]]:
    """The Job, ConfigMap and Secrets of a tiny run whose model and data are in ``bucket``."""
    config = validate_config(
        {
            "name": "image-run",
            "model": model,
            "dataset": {"type": "s3", "uri": f"s3://{bucket}/data/train.jsonl"},
            "maxSteps": 4,
            "loggingSteps": 1,
            "saveSteps": 2,
            "batchSize": 2,
            "lora": {"r": 8, "alpha": 16, "maxLength": 128},
        }
    )
    kube = KubernetesSettings(
        image=image,
        s3_endpoint_url=s3.endpoint(),  # the container shares this machine's network
        s3_secret_name=S3_SECRET,
        env={"OMP_NUM_THREADS": "1"},
        **settings,
    )
    objs = build_run(config, kube, name="image-run-0001", storage_uri=f"s3://{bucket}/runs")
    secrets = {S3_SECRET: {"AWS_ACCESS_KEY_ID": s3.access_key,
                           "AWS_SECRET_ACCESS_KEY": s3.secret_key}}  # fmt: skip
    if objs.secret is not None:
        secrets[objs.secret["metadata"]["name"]] = objs.secret["stringData"]
    return objs, secrets


@pytest.fixture
def run_bucket(s3_bucket: str, tiny_model_dir: Path) -> str:
    """A bucket holding the tiny model (``models/tiny``) and a chat dataset (``data/``)."""
    storage = open_storage(f"s3://{s3_bucket}")
    storage.upload_dir(f"s3://{s3_bucket}/models/tiny", tiny_model_dir)
    rows = [
        {"messages": [{"role": "user", "content": f"ticket {i}: the app crashes on login"},
                      {"role": "assistant", "content": f"triage {i % 3}: auth, high"}]}
        for i in range(32)
    ]  # fmt: skip
    storage.put_bytes(
        f"s3://{s3_bucket}/data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
    )
    return s3_bucket


@pytest.mark.timeout(600)
def test_worker_completes_in_the_trainer_image_as_the_job_runs_it(
    trainer_image: str, s3_server: S3Server, run_bucket: str, tmp_path: Path
) -> None:
    objs, secrets = _run(
        trainer_image, s3_server, run_bucket, f"s3://{run_bucket}/models/tiny",
        memory_limit="6Gi",
    )  # fmt: skip
    pod = objs.job["spec"]["template"]["spec"]
    with job_container(objs, "trainer", secrets, tmp_path) as (ctr, volumes):
        # What the runtime was told is what the Job says.
        assert ctr.spec.uid == pod["securityContext"]["runAsUser"]
        assert ctr.spec.read_only_root and ctr.spec.capabilities == ()
        assert ctr.spec.memory_limit_bytes == 6 * 2**30
        ctr.start()
        result = ctr.wait(timeout=540)
        output = ctr.output()
    assert result.code == 0, output[-4000:]
    # No GPU here: the image's TRL (1.15, Unsloth's cap) cannot train on CPU by itself.
    assert "trainer backend unsloth" in output, output[-4000:]
    events = read_events(volumes["run"] / "events.jsonl")
    types = [e.type for e in events]
    assert types[0] == "training.started" and types[-1] == "training.completed", (types, output)
    assert [e.step for e in events if e.type == "checkpoint.saved"] == [2, 4]
    done = events[-1]
    final = [a for a in done.artifacts if a.kind == "final"]
    assert final and final[0].uri.startswith(f"s3://{run_bucket}/runs/image-run-0001/")
    names = open_storage(final[0].uri).list(final[0].uri + "/")
    assert any(n.endswith("adapter_model.safetensors") for n in names), names


def test_a_container_over_its_memory_limit_is_oom_killed(
    trainer_image: str, s3_server: S3Server, tmp_path: Path
) -> None:
    hog = "x = bytearray(1024 * 1024 * 1024); print('allocated', len(x))"
    objs, secrets = _run(
        trainer_image, s3_server, "unused", "s3://unused/model",
        memory_limit="128Mi", worker_command=("python", "-c", hog),
    )  # fmt: skip
    with job_container(objs, "trainer", secrets, tmp_path) as (ctr, _):
        ctr.start()
        result = ctr.wait(timeout=120)
        output = ctr.output()
    assert result.code == 137, output
    assert result.oom_killed and result.reason == "OOMKilled"
    assert "allocated" not in output


def test_the_same_container_within_its_limit_is_not_reported_as_oom(
    trainer_image: str, s3_server: S3Server, tmp_path: Path
) -> None:
    small = "x = bytearray(16 * 1024 * 1024); print('allocated', len(x))"
    objs, secrets = _run(
        trainer_image, s3_server, "unused", "s3://unused/model",
        memory_limit="256Mi", worker_command=("python", "-c", small),
    )  # fmt: skip
    with job_container(objs, "trainer", secrets, tmp_path) as (ctr, _):
        ctr.start()
        result = ctr.wait(timeout=120)
        output = ctr.output()
    assert (result.code, result.oom_killed, result.reason) == (0, False, "Completed"), output
    assert "allocated 16777216" in output


def test_an_image_that_is_not_in_the_store_is_an_image_pull_error(tmp_path: Path) -> None:
    spec = oci.ContainerSpec(image="localhost/arkor-ops/no-such-image:0")
    with pytest.raises(oci.ImageNotFoundError, match="no-such-image"):
        oci.Container(spec, tmp_path)
