"""The Job, ConfigMap and Secret of one run, as plain dicts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from arkor_ops.backends.kubernetes import manifests as m
from arkor_ops.config import validate_config
from arkor_ops.settings import KubernetesSettings

TOKEN = "blob-token-do-not-leak"
HF = "hf_secret_do_not_leak"


def _config(**extra: Any) -> Any:
    return validate_config(
        {
            "name": "Support Bot v1!",
            "model": "unsloth/gemma-3-270m-it",
            "dataset": {"type": "blob", "url": "https://example.com/d.jsonl", "token": TOKEN},
            "maxSteps": 10,
            **extra,
        }
    )


def _build(settings: KubernetesSettings | None = None, **kwargs: Any) -> m.RunObjects:
    settings = settings or KubernetesSettings(hf_token=HF, s3_endpoint_url="http://minio:9000")
    return m.build_run(
        _config(), settings, name="support-bot-v1-abcd1234", storage_uri="s3://b/runs", **kwargs
    )


def _pod(objs: m.RunObjects) -> dict[str, Any]:
    return dict(objs.job["spec"]["template"]["spec"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def test_job_name_is_dns_safe_and_key_derived() -> None:
    name = m.job_name("Support Bot v1!", "flow-run-1")
    assert name == m.job_name("Support Bot v1!", "flow-run-1")
    assert name.startswith("support-bot-v1-") and len(name) <= 49
    assert m.job_name("x" * 300).startswith("x" * 40 + "-")
    assert m.job_name("Support", None) != m.job_name("Support", None)
    assert m.dns_name("!!!") == "run"


def test_trainer_and_native_sidecar_share_the_event_log() -> None:
    pod = _pod(_build())
    (sidecar,) = pod["initContainers"]
    (trainer,) = pod["containers"]
    assert sidecar["name"] == "sidecar" and sidecar["restartPolicy"] == "Always"
    assert trainer["name"] == "trainer"
    assert pod["restartPolicy"] == "Never"
    run_volume = next(v for v in pod["volumes"] if v["name"] == "run")
    assert "emptyDir" in run_volume
    for container in (sidecar, trainer):
        mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
        assert mounts["run"] == "/var/run/arkor"
        assert _env(container)["ARKOR_EVENT_LOG"]["value"] == "/var/run/arkor/events.jsonl"
        assert _env(container)["ARKOR_JOB_ID"]["value"] == "support-bot-v1-abcd1234"
    assert sidecar["ports"][0]["containerPort"] == 8377
    assert pod["containers"][0]["command"] == ["python", "-m", "arkor_ops.worker"]


def test_security_context_is_locked_down() -> None:
    pod = _pod(_build())
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for container in (*pod["initContainers"], *pod["containers"]):
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        writable = {v["mountPath"] for v in container["volumeMounts"] if not v.get("readOnly")}
        assert {"/tmp", "/var/run/arkor"} <= writable
        home = _env(container)["HOME"]["value"]
        assert any(home == w or home.startswith(w + "/") for w in writable), home


def test_gpu_node_pool_and_gpu_type() -> None:
    settings = KubernetesSettings(gpu_count=2, gpu_type="NVIDIA-H100-80GB-HBM3")
    pod = _pod(_build(settings))
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"arkor-ops.dev/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expr = terms["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr == {
        "key": "nvidia.com/gpu.product",
        "operator": "In",
        "values": ["NVIDIA-H100-80GB-HBM3"],
    }


def test_cpu_only_run_requests_no_gpu() -> None:
    pod = _pod(_build(KubernetesSettings(gpu_count=0, node_selector={})))
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in pod and "affinity" not in pod


def test_limits_retries_and_pod_failure_policy() -> None:
    settings = KubernetesSettings(
        active_deadline_seconds=3600, ttl_seconds_after_finished=60, backoff_limit=3
    )
    spec = _build(settings).job["spec"]
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["backoffLimit"] == 3
    # the trainer knows the budget: only the 4th counted failure writes training.failed
    trainer_env = _env(spec["template"]["spec"]["containers"][0])
    assert trainer_env["ARKOR_MAX_ATTEMPTS"]["value"] == "4"
    assert spec["suspend"] is True  # it has a Secret: resumed by the backend once that exists
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [2]},
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def test_labels_annotations_and_kueue() -> None:
    settings = KubernetesSettings(kueue_queue="team-a", priority_class="training")
    objs = _build(
        settings, idempotency_key="key-1", flow_run_id="0b7c5f3e-1111-2222-3333-444455556666"
    )
    meta = objs.job["metadata"]
    assert meta["labels"][m.MANAGED_BY] == "arkor-ops"
    assert meta["labels"][m.APP_NAME] == "arkor-ops-run"
    assert meta["labels"][m.RUN_NAME_LABEL] == "support-bot-v1"
    assert meta["labels"][m.FLOW_RUN_LABEL] == "0b7c5f3e-1111-2222-3333-444455556666"
    assert meta["labels"][m.IDEMPOTENCY_LABEL] == m.key_hash("key-1")
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert meta["annotations"]["arkor-ops.dev/run-name"] == "Support Bot v1!"
    assert meta["annotations"]["arkor-ops.dev/storage-uri"] == "s3://b/runs/support-bot-v1-abcd1234"
    template = objs.job["spec"]["template"]
    assert template["metadata"]["labels"][m.MANAGED_BY] == "arkor-ops"
    assert (
        template["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] == "trainer"
    )
    assert template["spec"]["priorityClassName"] == "training"
    assert objs.config_map["metadata"]["labels"] == objs.secret["metadata"]["labels"]  # type: ignore[index]


def test_secrets_only_by_reference() -> None:
    objs = _build()
    text = json.dumps(objs.job) + json.dumps(objs.config_map)
    assert TOKEN not in text and HF not in text
    env = _env(_pod(objs)["containers"][0])
    # optional: the run's Secret is deleted when the run ends, and a pod the Job starts after
    # that must still start (it finds the run ended in its log and exits)
    assert env["ARKOR_DATASET_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "support-bot-v1-abcd1234-secrets",
        "key": "ARKOR_DATASET_TOKEN",
        "optional": True,
    }
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "HF_TOKEN"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "arkor-ops-s3"
    assert "optional" not in env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert env["ARKOR_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert objs.secret is not None
    assert objs.secret["stringData"] == {"ARKOR_DATASET_TOKEN": TOKEN, "HF_TOKEN": HF}
    config = json.loads(objs.config_map["data"]["config.json"])
    assert config["dataset"] == {"type": "blob", "url": "https://example.com/d.jsonl"}


def test_presigned_url_credentials_travel_only_in_the_secret() -> None:
    signed = "https://u:pw-do-not-leak@example.com/b/d.jsonl?X-Amz-Signature=sig-do-not-leak"
    config = validate_config(
        {"name": "p", "model": "m", "dataset": {"type": "blob", "url": signed}, "maxSteps": 1}
    )
    objs = m.build_run(config, KubernetesSettings(), name="p-1", storage_uri="s3://b/runs")
    text = json.dumps(objs.job) + json.dumps(objs.config_map)
    for secret in ("sig-do-not-leak", "pw-do-not-leak", "X-Amz-Signature"):
        assert secret not in text
    assert json.loads(objs.config_map["data"]["config.json"])["dataset"]["url"] == (
        "https://example.com/b/d.jsonl"
    )
    assert objs.secret is not None and objs.secret["stringData"] == {"ARKOR_DATASET_URL": signed}
    env = _env(_pod(objs)["containers"][0])
    assert env["ARKOR_DATASET_URL"]["valueFrom"]["secretKeyRef"]["name"] == "p-1-secrets"


def test_no_secret_object_when_the_run_has_no_secrets() -> None:
    config = validate_config(
        {"name": "r", "model": "m", "dataset": {"type": "s3", "uri": "s3://b/d.jsonl"}}
    )
    objs = m.build_run(config, KubernetesSettings(), name="r-1", storage_uri="s3://b/p")
    assert objs.secret is None
    assert "ARKOR_DATASET_TOKEN" not in _env(_pod(objs)["containers"][0])
    # no Secret to wait for: the Job starts at once, its pod waiting for the ConfigMap volume
    assert objs.job["spec"]["suspend"] is False
    assert {"name": "config", "configMap": {"name": "r-1-config"}} in _pod(objs)["volumes"]
    queued = m.build_run(
        config, KubernetesSettings(kueue_queue="q"), name="r-1", storage_uri="s3://b/p"
    )
    assert queued.job["spec"]["suspend"] is True  # Kueue resumes it on admission


@pytest.mark.parametrize("value", ["0b7c5f3e-1111", "x" * 64, "bad value"])
def test_flow_run_id_goes_to_an_annotation_when_not_a_label(value: str) -> None:
    objs = _build(flow_run_id=value)
    meta = objs.job["metadata"]
    if m.label_value(value):
        assert meta["labels"][m.FLOW_RUN_LABEL] == value
    else:
        assert m.FLOW_RUN_LABEL not in meta["labels"]
        assert meta["annotations"]["arkor-ops.dev/flow-run-id"] == value


def test_owner_reference() -> None:
    job = {"metadata": {"name": "j", "uid": "u-1"}}
    assert m.owner_reference(job) == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "j",
        "uid": "u-1",
        "controller": False,
    }


def test_the_job_round_trips_through_the_official_client_models() -> None:
    from kubernetes import client

    objs = _build()
    model = client.V1Job.model_validate(objs.job)
    assert client.ApiClient().sanitize_for_serialization(model) == objs.job


def test_hub_endpoint_offline_and_node_model_cache() -> None:
    default = _pod(_build())
    env = _env(default["containers"][0])
    assert "HF_ENDPOINT" not in env and "HF_HUB_OFFLINE" not in env, "online, huggingface.co"
    assert env["ARKOR_HF_TOKEN_SETTING"]["value"] == "ARKOR_K8S_HF_TOKEN"
    assert not [v for v in default["volumes"] if "hostPath" in v]

    settings = KubernetesSettings(
        hf_endpoint="https://hub.mirror.example",
        hub_offline=True,
        model_cache_host_path="/var/lib/arkor-ops/cache",
    )
    pod = _pod(_build(settings))
    (trainer,) = pod["containers"]
    env = _env(trainer)
    assert env["HF_ENDPOINT"]["value"] == "https://hub.mirror.example"
    assert env["HF_HUB_OFFLINE"]["value"] == "1"
    assert env["HF_HOME"]["value"].startswith(env["ARKOR_MODEL_CACHE"]["value"] + "/")
    assert [e["name"] for e in trainer["env"]].count("HF_HOME") == 1
    (cache,) = [v for v in pod["volumes"] if v["name"] == "model-cache"]
    assert cache["hostPath"] == {"path": "/var/lib/arkor-ops/cache", "type": "DirectoryOrCreate"}
    mounts = {mount["name"]: mount["mountPath"] for mount in trainer["volumeMounts"]}
    assert mounts["model-cache"] == env["ARKOR_MODEL_CACHE"]["value"]
    (sidecar,) = pod["initContainers"]
    assert "model-cache" not in {mount["name"] for mount in sidecar["volumeMounts"]}


def test_a_claim_as_the_shared_model_cache_and_its_bound() -> None:
    settings = KubernetesSettings(model_cache_claim="arkor-model-cache", model_cache_max_bytes=5)
    pod = _pod(_build(settings))
    (cache,) = [v for v in pod["volumes"] if v["name"] == "model-cache"]
    assert cache == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "arkor-model-cache"},
    }
    env = _env(pod["containers"][0])
    assert env["ARKOR_MODEL_CACHE_MAX_BYTES"]["value"] == "5"
    assert env["HF_HOME"]["value"].startswith(env["ARKOR_MODEL_CACHE"]["value"] + "/")
    with pytest.raises(ValidationError, match="MODEL_CACHE_CLAIM"):
        KubernetesSettings(model_cache_claim="c", model_cache_host_path="/var/cache/arkor")


def test_preflight_is_the_run_on_the_cpu_pool_without_gpu_or_sidecar() -> None:
    settings = KubernetesSettings(
        hf_token=HF,
        s3_endpoint_url="http://minio:9000",
        model_cache_host_path="/var/cache/arkor",
        kueue_queue="team-a",
        priority_class="training",
        gpu_type="NVIDIA-H100-80GB-HBM3",
    )
    run = _build(settings, idempotency_key="k-1")
    pre = m.build_preflight(run, settings)
    name = "support-bot-v1-abcd1234-preflight"

    assert pre.job["metadata"]["name"] == name
    assert pre.config_map["metadata"]["name"] == f"{name}-config"
    assert pre.secret is not None and pre.secret["metadata"]["name"] == f"{name}-secrets"
    assert run.secret is not None
    assert pre.secret["stringData"] == run.secret["stringData"]
    for meta in (pre.job["metadata"], pre.job["spec"]["template"]["metadata"]):
        assert meta["labels"][m.STAGE_LABEL] == "preflight"
        assert m.KUEUE_QUEUE_LABEL not in meta["labels"]
    # same key and config: a second submit adopts it, as it adopts the run's Job
    assert pre.job["metadata"]["labels"][m.IDEMPOTENCY_LABEL] == m.key_hash("k-1")
    assert pre.job["metadata"]["annotations"] == run.job["metadata"]["annotations"]
    spec = pre.job["spec"]
    assert spec["suspend"] is True, "resumed once its Secret exists"
    assert spec["activeDeadlineSeconds"] == settings.preflight_timeout_seconds
    pod = spec["template"]["spec"]
    assert "initContainers" not in pod, "no sidecar"
    for key in ("tolerations", "affinity", "priorityClassName"):
        assert key not in pod
    assert pod["nodeSelector"] == {"arkor-ops.dev/pool": "cpu"}
    assert not [v for v in pod["volumes"] if "hostPath" in v], "no node cache"
    assert {"name": "config", "configMap": {"name": f"{name}-config"}} in pod["volumes"]
    (trainer,) = pod["containers"]
    env = _env(trainer)
    assert env["ARKOR_PREFLIGHT"]["value"] == "1"
    assert env["ARKOR_JOB_ID"]["value"] == "support-bot-v1-abcd1234", "it writes the run's log"
    assert env["HF_HOME"]["value"] == "/var/cache/arkor/huggingface"
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"{name}-secrets"
    assert env["ARKOR_GPU_TYPE"]["value"] == "NVIDIA-H100-80GB-HBM3", "what the model must fit"
    assert "ARKOR_GPU_MEMORY_GIB" not in env  # unset: the worker reads it from the GPU type
    assert "nvidia.com/gpu" not in trainer["resources"]["limits"]
    assert trainer["resources"]["requests"]["cpu"] == settings.preflight_cpu_request
    assert [m["name"] for m in trainer["volumeMounts"]] == [
        "run",
        "cache",
        "dshm",
        "config",
        "podinfo",
        "tmp",
    ]
    # the run's own objects are unchanged
    assert run.job["spec"]["template"]["spec"]["initContainers"]
    assert run.job["metadata"]["name"] == "support-bot-v1-abcd1234"
