"""Settings of the Kubernetes backend, from ``ARKOR_K8S_*`` environment variables.

Lists and mappings are JSON in the environment, e.g.
``ARKOR_K8S_NODE_SELECTOR='{"arkor-ops.dev/pool": "gpu"}'``. The full table is in
``docs/kubernetes.md``; every field below carries its description.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arkor_ops.settings.run import DEFAULT_SIDECAR_PORT
from arkor_ops.settings.serving import VLLM_VERSION

DEFAULT_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
)
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class KubernetesSettings(BaseSettings):
    """Where and how runs are created on a Kubernetes cluster."""

    model_config = SettingsConfigDict(
        env_prefix="ARKOR_K8S_", extra="forbid", frozen=True, validate_default=True
    )

    # -- where -------------------------------------------------------------------------------
    namespace: str = Field(
        default="arkor-ops",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Namespace of the run Jobs (and of their Secret and ConfigMap).",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="Kubeconfig path; default `$KUBECONFIG`, `~/.kube/config`, else in-cluster.",
    )
    context: str | None = Field(default=None, description="Kubeconfig context; default current.")
    events_via: Literal["proxy", "direct"] = Field(
        default="proxy",
        description=(
            "How the client reaches the sidecar: `proxy` = the API server's pod proxy (needs only "
            "RBAC), `direct` = the pod IP (in-cluster clients)."
        ),
    )

    # -- images and commands -----------------------------------------------------------------
    image: str = Field(
        default="ghcr.io/arkor-ops/trainer:0.1.0", min_length=1, description="Trainer image."
    )
    sidecar_image: str = Field(
        default="ghcr.io/arkor-ops/sidecar:0.1.0", min_length=1, description="Sidecar image."
    )
    serving_image: str = Field(
        default="ghcr.io/arkor-ops/serving:0.1.0",
        min_length=1,
        description="Endpoint image (`arkor-ops endpoints`: llama-server and the gateway).",
    )
    vllm_image: str = Field(
        default=f"docker.io/vllm/vllm-openai:v{VLLM_VERSION}",
        min_length=1,
        description="The GPU engine's image (`arkor-ops endpoints create --engine vllm`).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy of both images."
    )
    image_pull_secrets: tuple[str, ...] = Field(
        default=(), description="Names of existing docker-registry Secrets for private images."
    )
    worker_command: tuple[str, ...] = Field(
        default=("python", "-m", "arkor_ops.worker"),
        min_length=1,
        description="Trainer container command.",
    )
    sidecar_command: tuple[str, ...] = Field(
        default=("python", "-m", "arkor_ops.sidecar"),
        min_length=1,
        description="Sidecar container command.",
    )
    sidecar_port: int = Field(
        default=DEFAULT_SIDECAR_PORT, ge=1, le=65535, description="Sidecar HTTP port."
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra non-secret environment for the trainer (e.g. `HF_HUB_OFFLINE`).",
    )

    # -- node pool and resources ---------------------------------------------------------------
    node_selector: dict[str, str] = Field(
        default_factory=lambda: {"arkor-ops.dev/pool": "gpu"},
        description="Node selector of the run pod (the GPU node pool).",
    )
    tolerations: tuple[dict[str, Any], ...] = Field(
        default=DEFAULT_TOLERATIONS, description="Tolerations (the GPU pool's taint)."
    )
    gpu_count: int = Field(default=1, ge=0, le=64, description="GPUs per run (0 = CPU only).")
    gpu_resource: str = Field(
        default="nvidia.com/gpu", min_length=1, description="Extended resource name of a GPU."
    )
    gpu_type: str | None = Field(
        default=None, description="Required GPU model, matched against `gpu_type_label`."
    )
    gpu_type_label: str = Field(
        default="nvidia.com/gpu.product", description="Node label that names the GPU model."
    )
    gpu_memory_gib: float | None = Field(
        default=None,
        gt=0,
        description="Memory of one GPU, GiB, for the pre-flight's check that the model fits "
        "(default: from `gpu_type` where it names a known product or a size, e.g. `-80GB`).",
    )
    cpu_request: str = Field(default="2", pattern=_QUANTITY, description="Trainer CPU request.")
    cpu_limit: str | None = Field(default=None, pattern=_QUANTITY, description="CPU limit.")
    memory_request: str = Field(default="8Gi", pattern=_QUANTITY, description="Memory request.")
    memory_limit: str | None = Field(
        default="16Gi", pattern=_QUANTITY, description="Trainer memory limit (OOMKill above)."
    )
    scratch_size_limit: str = Field(
        default="32Gi",
        pattern=_QUANTITY,
        description="`sizeLimit` of the `/tmp` volume (dataset, checkpoints before upload).",
    )
    cache_size_limit: str = Field(
        default="64Gi",
        pattern=_QUANTITY,
        description="`sizeLimit` of the `/var/cache/arkor` volume (base models, HF, compilers).",
    )
    ephemeral_storage_request: str = Field(
        default="16Gi", pattern=_QUANTITY, description="Trainer `ephemeral-storage` request."
    )
    ephemeral_storage_limit: str = Field(
        default="100Gi",
        pattern=_QUANTITY,
        description="Trainer `ephemeral-storage` limit; covers both volumes' sizeLimits.",
    )
    priority_class: str | None = Field(default=None, description="PriorityClass of run pods.")
    # -- the CPU pre-flight (docs/kubernetes.md: "Pre-flight") --------------------------------
    preflight: bool = Field(
        default=True,
        description="Check each training run in a Job on the CPU pool first (dataset rows, "
        "model access, chat template, token count); only a passing one creates the GPU Job.",
    )
    preflight_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"arkor-ops.dev/pool": "cpu"},
        description="Node selector of the pre-flight pod (no GPU, no GPU toleration).",
    )
    preflight_cpu_request: str = Field(
        default="500m", pattern=_QUANTITY, description="Pre-flight CPU request."
    )
    preflight_memory_request: str = Field(
        default="1Gi", pattern=_QUANTITY, description="Pre-flight memory request."
    )
    preflight_memory_limit: str = Field(
        default="4Gi", pattern=_QUANTITY, description="Pre-flight memory limit."
    )
    preflight_timeout_seconds: int = Field(
        default=900,
        ge=30,
        description="Longest a pre-flight may take, pending time included "
        "(`activeDeadlineSeconds`); `start()` waits for it.",
    )

    kueue_queue: str | None = Field(
        default=None, description="Kueue LocalQueue; Jobs are then created suspended for Kueue."
    )
    service_account: str | None = Field(
        default=None, description="ServiceAccount of run pods (they need no API access)."
    )

    # -- lifetime ----------------------------------------------------------------------------
    active_deadline_seconds: int = Field(
        default=86_400, ge=60, description="Hard wall-clock limit of a run, pending time included."
    )
    ttl_seconds_after_finished: int = Field(
        default=7 * 86_400, ge=0, description="Finished Jobs are deleted after this long."
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=100, description="Retries after failures (disruptions not counted)."
    )
    max_pod_restarts: int = Field(
        default=10,
        ge=0,
        le=1000,
        description=(
            "Pod restarts (evictions, preemptions, node losses, crashes) a run may have; the "
            "next pod then fails the run (exit 2) instead of being retried for free."
        ),
    )
    cancel_grace_seconds: int = Field(
        default=30, ge=1, le=3600, description="Time a cancelled trainer has to save and exit."
    )
    cancel_timeout_seconds: float = Field(
        default=180, gt=0, description="How long cancel() waits for the last pod to go."
    )

    # -- storage -----------------------------------------------------------------------------
    storage_uri: str | None = Field(
        default=None,
        pattern=r"^(s3|file)://.+",
        description="Run storage prefix, `s3://bucket/prefix` (required to submit).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint as pods see it, e.g. `http://minio.arkor-ops:9000`."
    )
    s3_client_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint as this client sees it; default `ARKOR_S3_ENDPOINT_URL`.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region.")
    s3_secret_name: str | None = Field(
        default="arkor-ops-s3",
        description="Existing Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.",
    )
    hf_token: SecretStr | None = Field(
        default=None, description="Hugging Face token, copied into each run's own Secret."
    )
    hf_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="Hub the pods download from (`HF_ENDPOINT`): a mirror or private hub.",
    )
    hub_offline: bool = Field(
        default=False,
        description="Air-gapped: pods never contact a hub (`HF_HUB_OFFLINE=1`); Hub ids must "
        "be in the model cache.",
    )
    model_cache_host_path: str | None = Field(
        default=None,
        pattern=r"^/.+",
        description="Node directory (hostPath) shared by a node's runs as the model and Hub "
        "cache, so a model is downloaded once per node; default: per pod (`emptyDir`).",
    )
    model_cache_claim: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="A PersistentVolumeClaim shared by the runs as the model and Hub cache "
        "(ReadWriteMany across nodes, or ReadWriteOnce per node pool); instead of "
        "`MODEL_CACHE_HOST_PATH`.",
    )
    model_cache_max_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Bound on the shared cache's entries (`ARKOR_MODEL_CACHE_MAX_BYTES` of the "
        "pods): least recently used entries no run is using are evicted past it.",
    )

    @model_validator(mode="after")
    def _one_cache_volume(self) -> KubernetesSettings:
        if self.model_cache_host_path and self.model_cache_claim:
            raise ValueError(
                "set one of ARKOR_K8S_MODEL_CACHE_HOST_PATH and ARKOR_K8S_MODEL_CACHE_CLAIM: "
                "both name the volume of the shared model cache"
            )
        return self

    @property
    def shared_model_cache(self) -> bool:
        """Whether runs share a model cache volume (a node directory or a claim)."""
        return bool(self.model_cache_host_path or self.model_cache_claim)


class KubeconfigSettings(BaseSettings):
    """The kubeconfig that kubectl would use (``KUBECONFIG``, no prefix)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    kubeconfig: str = Field(
        default="",
        validation_alias="KUBECONFIG",
        description="kubectl's list of kubeconfig files; the first one is used.",
    )

    def first_path(self) -> str:
        """The first file of the list ("" when unset)."""
        return self.kubeconfig.split(os.pathsep)[0]
