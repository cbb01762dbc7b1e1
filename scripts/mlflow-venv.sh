#!/usr/bin/env bash
# The test MLflow tracking server's virtual environment: mlflow from requirements/mlflow-server.lock,
# in its own venv because the full mlflow's pins conflict with prefect's (the client, mlflow-skinny,
# is in .venv). Kept outside the repo, keyed by the lock's hash:
#   ~/.cache/arkor-ops/venv-mlflow-<lockhash>
# A no-op when complete. Prints the venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/mlflow-server.lock
PY=${PYTHON:-python3}
hash=$(sha256sum "$LOCK" | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/arkor-ops/venv-mlflow-$hash"
if [ ! -f "$venv/.arkor-complete" ]; then
  echo "==> building $venv (mlflow, the test tracking server)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --progress-bar off --upgrade "pip>=24" >&2
  "$venv/bin/python" -m pip install --quiet --progress-bar off --no-deps -r "$LOCK" >&2
  "$venv/bin/python" -c 'import mlflow.server, boto3' >&2
  touch "$venv/.arkor-complete"
fi
echo "$venv/bin/python"
