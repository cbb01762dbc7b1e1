#!/usr/bin/env bash
# Build the trainer and sidecar images and load them into a kind cluster (needs Docker and
# kind; it cannot run on the project's CI machine, which has neither). See docs/kubernetes.md.
#
#   kind create cluster --config k8s/kind/cluster.yaml
#   scripts/kind-load-images.sh                  # builds and loads :0.1.0 into cluster "arkor-ops"
#   TAG=dev CLUSTER=arkor-ops scripts/kind-load-images.sh
#
# Then: ARKOR_K8S_IMAGE=ghcr.io/arkor-ops/trainer:$TAG ARKOR_K8S_SIDECAR_IMAGE=ghcr.io/arkor-ops/sidecar:$TAG
# and ARKOR_K8S_IMAGE_PULL_POLICY=Never (kind nodes have the images; nothing is pulled).
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${TAG:-0.1.0}
CLUSTER=${CLUSTER:-arkor-ops}
REGISTRY=${REGISTRY:-ghcr.io/arkor-ops}

for tool in docker kind; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 2; }
done
kind get clusters | grep -qx "$CLUSTER" || {
  echo "error: no kind cluster '$CLUSTER': kind create cluster --config k8s/kind/cluster.yaml" >&2
  exit 2
}
for name in trainer sidecar; do
  if [ ! -f "images/$name/Dockerfile" ]; then
    echo "error: images/$name/Dockerfile is missing" >&2
    exit 2
  fi
  image="$REGISTRY/$name:$TAG"
  echo "==> building $image"
  docker build -t "$image" -f "images/$name/Dockerfile" .
  echo "==> loading $image into kind cluster $CLUSTER"
  kind load docker-image "$image" --name "$CLUSTER"
done
echo "==> done. export ARKOR_K8S_IMAGE=$REGISTRY/trainer:$TAG ARKOR_K8S_SIDECAR_IMAGE=$REGISTRY/sidecar:$TAG ARKOR_K8S_IMAGE_PULL_POLICY=Never"
