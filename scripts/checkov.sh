#!/usr/bin/env bash
# Scan the Dockerfiles (images/) and Kubernetes manifests (k8s/, rendered by kustomize; the run
# Job; the Prefect work pool's flow-run Job) with checkov. checkov lives in its own virtualenv
# outside the repo, because its pins conflict with the project's:
# ~/.cache/arkor-ops/venv-checkov-<version>, created on first use (needs PyPI once), reused
# afterwards.
#
#   scripts/checkov.sh            # scan images/ and k8s/
#   CHECKOV_VERSION=3.3.30 scripts/checkov.sh
#
# Skipped checks, each on purpose:
#   CKV_K8S_11  CPU limit on runs: CFS throttling slows training; CPU is requested, memory is
#               limited (set ARKOR_K8S_CPU_LIMIT to add one).
#   CKV_K8S_43  image by digest: example manifests pin release tags; pin digests in your overlay.
#   CKV_K8S_15  imagePullPolicy Always: IfNotPresent/Always is a deployment choice; tags are pinned.
#   CKV_K8S_40  UID >= 10000: images run as the non-root UID 1000 they are built with.
#   CKV_K8S_21  default namespace: kustomize sets the namespace; rendered objects have one.
#   CKV_K8S_35  secrets as files rather than env: the worker/sidecar contract reads AWS_* and
#               ARKOR_DATASET_TOKEN from env (secretKeyRef, never literals).
#   CKV_K8S_22  read-only root fs is set; checkov misreads native sidecars in initContainers.
#   CKV2_K8S_6  NetworkPolicy per pod: k8s/base ships one for run pods (the sidecar's port; its
#               API server CIDR is cluster-specific, patched per cluster); the dev MinIO has none.
#   CKV_SECRET_6 base64 high-entropy string: k8s/minio/secret.dev.yaml holds documented
#               DEV-ONLY example credentials on purpose.
#   CKV_K8S_38  service account tokens are off (automountServiceAccountToken: false) in every
#               run pod; checkov flags ServiceAccount objects that set it too. The flow-run pod
#               (k8s/prefect) mounts its token on purpose: it creates the training Job; so does
#               an endpoint's pod: it reads its target and keys (endpoints create --render).
#   CKV_DOCKER_2 HEALTHCHECK in Dockerfiles: Kubernetes probes are used instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${CHECKOV_VERSION:-3.3.30}
VENV=${ARKOR_CHECKOV_VENV:-$HOME/.cache/arkor-ops/venv-checkov-$VERSION}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/checkov" ]; then
  echo "==> installing checkov $VERSION into $VENV (first use only)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --progress-bar off "checkov==$VERSION"
fi

SKIP=CKV_K8S_11,CKV_K8S_43,CKV_K8S_15,CKV_K8S_40,CKV_K8S_21,CKV_K8S_35,CKV_K8S_22,CKV2_K8S_6,CKV_SECRET_6,CKV_K8S_38,CKV_DOCKER_2
KUBECTL=${KUBECTL:-kubectl}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Render every kustomization, so checkov sees what `kubectl apply -k` would apply.
find k8s -name kustomization.yaml -not -path '*/kind/*' | sort | while read -r kfile; do
  dir=$(dirname "$kfile")
  "$KUBECTL" kustomize "$dir" > "$out/$(echo "$dir" | tr / _).yaml"
done
# ...and the Job and ConfigMap of an example run, as KubernetesBackend builds them.
if [ -x .venv/bin/arkor-ops ]; then
  ARKOR_K8S_GPU_TYPE=NVIDIA-L4 ARKOR_K8S_PRIORITY_CLASS=arkor-ops-training \
    ARKOR_K8S_SERVICE_ACCOUNT=arkor-ops-run ARKOR_K8S_S3_ENDPOINT_URL=http://minio:9000 \
    .venv/bin/arkor-ops render examples/render/config.yaml --name checkov-example-0001 \
    > "$out/run-job.yaml"
  # ...and the flow-run Job of the Prefect work pool's base job template, with its defaults.
  .venv/bin/python scripts/render-job-template.py k8s/prefect/base-job-template.json \
    > "$out/flow-run-job.yaml"
  # ...and an endpoint's objects (arkor-ops endpoints create --render).
  ARKOR_K8S_CPU_LIMIT=4 ARKOR_K8S_SERVING_IMAGE=ghcr.io/arkor-ops/serving:0.1.0 \
    .venv/bin/arkor-ops endpoints create triage --base google/gemma-3-270m \
    --adapter s3://arkor-runs/triage-0001/final --render > "$out/endpoint.yaml"
  ARKOR_K8S_CPU_LIMIT=4 ARKOR_K8S_SERVING_IMAGE=ghcr.io/arkor-ops/serving:0.1.0 \
    ARKOR_K8S_VLLM_IMAGE=docker.io/vllm/vllm-openai:v0.34.0 \
    .venv/bin/arkor-ops endpoints create triage-gpu --engine vllm --base google/gemma-3-270m \
    --adapter s3://arkor-runs/triage-0001/final --render > "$out/endpoint-vllm.yaml"
fi
status=0
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false LOG_LEVEL=${LOG_LEVEL:-ERROR}
"$VENV/bin/checkov" --quiet --compact --skip-download --skip-check "$SKIP" --framework kubernetes -d "$out" || status=$?
if [ -d images ]; then
  "$VENV/bin/checkov" --quiet --compact --skip-download --skip-check "$SKIP" --framework dockerfile -d images || status=$?
fi
exit "$status"
