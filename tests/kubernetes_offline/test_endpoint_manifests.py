"""An endpoint's objects as rendered (no cluster): what the pod may do, where secrets come from,
what a bad name or target says; and ``arkor-ops endpoints`` refusing bad input before any call."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from arkor_ops.errors import ServingError
from arkor_ops.serving.cluster import (
    CHAMPION_OF_LABEL,
    EndpointSpec,
    Target,
    keys_secret,
    object_name,
    render,
)
from arkor_ops.settings import KubernetesSettings


def _settings() -> KubernetesSettings:
    return KubernetesSettings(
        namespace="ml",
        s3_endpoint_url="http://minio:9000",
        s3_secret_name="arkor-s3",
        serving_image="registry.example/arkor-ops/serving:1.2.3",
    )


def _by_kind(spec: EndpointSpec) -> dict[str, dict]:
    return {o["kind"]: o for o in render(spec, _settings())}


def test_the_pod_reads_only_its_own_target_and_keys_and_gets_s3_keys_from_the_secret() -> None:
    spec = EndpointSpec("triage", "google/gemma-3-270m", Target("3", "s3://runs/job/final"))
    objects = _by_kind(spec)
    assert set(objects) == {
        "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Deployment", "Service",
    }  # fmt: skip
    rules = objects["Role"]["rules"]
    named = {r["resources"][0]: r.get("resourceNames") for r in rules}
    assert named == {
        "configmaps": [object_name("triage")],
        "secrets": [keys_secret("triage")],
        "deployments": [object_name("triage")],
        "events": None,
    }
    assert all(set(r["verbs"]) <= {"get", "create"} for r in rules)
    assert all(r["verbs"] == ["create"] for r in rules if r["resources"] == ["events"])
    assert objects["Secret"]["data"] == {"keys.jsonl": ""}  # keys are added as hashes, later
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == object_name("triage")
    (engine,) = pod["containers"]
    assert engine["image"] == "registry.example/arkor-ops/serving:1.2.3"
    assert engine["securityContext"]["readOnlyRootFilesystem"] is True
    assert engine["readinessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e for e in engine["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "arkor-s3", "key": key}
    assert env["ARKOR_ENDPOINT_BASE_MODEL"]["value"] == "google/gemma-3-270m"
    assert Target.from_json(objects["ConfigMap"]["data"]["target.json"]) == spec.target
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert CHAMPION_OF_LABEL not in objects["Deployment"]["metadata"]["labels"]


def test_an_endpoint_that_follows_a_champion_is_labelled_with_its_model() -> None:
    target = Target("3", "s3://runs/job/final", "champion", "support/triage")
    objects = _by_kind(EndpointSpec("triage", "google/gemma-3-270m", target))
    assert objects["ConfigMap"]["metadata"]["labels"][CHAMPION_OF_LABEL] == "support-triage"


@pytest.mark.parametrize(
    ("name", "base", "auth", "message"),
    [
        ("Triage", "m", "key", "endpoint name 'Triage': use 1-40 lowercase"),
        ("a" * 41, "m", "key", "use 1-40 lowercase"),
        ("triage", "", "key", "needs a base model"),
        ("triage", "m", "open", "auth 'open': use 'key' or 'none'"),
    ],
)
def test_a_bad_spec_names_its_field(name: str, base: str, auth: str, message: str) -> None:
    with pytest.raises(ServingError, match=message):
        EndpointSpec(name, base, Target("1", None), auth=auth)


def test_a_damaged_target_says_so() -> None:
    with pytest.raises(ServingError, match=r"target\.json is not a target"):
        Target.from_json('{"adapter": "s3://x"}')


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arkor_ops.cli", "endpoints", *args],
        capture_output=True, text=True, check=False, timeout=120,
        env={"PATH": "/usr/bin:/bin", "ARKOR_K8S_KUBECONFIG": "/nonexistent/kubeconfig"},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "triage"), "what to serve: --model NAME"),
        (("create", "triage", "--adapter", "s3://r/f"), "--adapter needs --base"),
        (("create", "triage", "--model", "m", "--adapter", "s3://r/f"), "not both"),
        (("create", "triage", "--model", "m"), "MLFLOW_TRACKING_URI is not set"),
        (("create", "Bad_Name", "--base", "m", "--adapter", "s3://r/f"), "endpoint name"),
    ],
)
def test_the_cli_refuses_bad_input_before_calling_anything(
    args: tuple[str, ...], message: str
) -> None:
    out = _cli(*args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def test_render_prints_the_objects_and_no_key() -> None:
    out = _cli("create", "triage", "--base", "m", "--adapter", "s3://r/f", "--render")
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d["kind"] for d in docs][-2:] == ["Deployment", "Service"]
    assert "ak-" not in out.stdout


def test_the_vllm_engine_is_a_container_with_lora_loaded_at_runtime_behind_the_gateway() -> None:
    spec = EndpointSpec(
        "triage", "google/gemma-3-270m", Target("3", "s3://runs/job/final"), engine="vllm"
    )
    pod = _by_kind(spec)["Deployment"]["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    gateway, vllm = pod["containers"]
    assert fetch["command"][-2:] == ["fetch-base", "/var/cache/arkor/base"]
    assert vllm["image"] == _settings().vllm_image
    assert vllm["command"] == ["vllm", "serve", "/var/cache/arkor/base"]
    args = vllm["args"]
    assert "--enable-lora" in args
    assert args[args.index("--host") + 1] == "127.0.0.1"  # only the gateway is a way in
    assert args[args.index("--served-model-name") + 1] == "triage@base"
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in gateway["resources"]["limits"]
    gateway_env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert gateway_env["ARKOR_ENDPOINT_ENGINE"] == "vllm"
    assert gateway_env["ARKOR_ENDPOINT_ENGINE_URL"] == "http://127.0.0.1:8001"
    # the adapters the gateway fetched are where vLLM reads them, read-only for vLLM
    shared = {m["name"]: m for m in vllm["volumeMounts"]}["adapters"]
    mine = {m["name"]: m for m in gateway["volumeMounts"]}["adapters"]
    assert shared["mountPath"] == mine["mountPath"] and shared["readOnly"] is True
    assert gateway_env["ARKOR_ENDPOINT_WORKDIR"].startswith(mine["mountPath"])
    assert gateway["ports"][0]["containerPort"] == 8000


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ServingError, match=r"engine 'tgi': use one of llama\.cpp, vllm"):
        EndpointSpec("triage", "m", Target("1", None), engine="tgi")
