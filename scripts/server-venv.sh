#!/usr/bin/env bash
# A test server's own virtual environment, for servers whose pins conflict with the project's:
#   hub     olah (a maintained Hugging Face Hub mirror that serves local git repos),
#           from requirements/hub-server.lock
#   mlflow  the full mlflow tracking server (its pins conflict with prefect's; the client,
#           mlflow-skinny, is in .venv), from requirements/mlflow-server.lock
# Kept outside the repo, keyed by the lock's hash: ~/.cache/arkor-ops/venv-<name>-<lockhash>.
# A no-op when complete. Prints the venv's python on stdout.
#   usage: scripts/server-venv.sh hub|mlflow
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  hub) LOCK=requirements/hub-server.lock; CHECK='import olah.server' ;;
  mlflow) LOCK=requirements/mlflow-server.lock; CHECK='import mlflow.server, boto3' ;;
  *) echo "usage: $0 hub|mlflow" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
hash=$(sha256sum "$LOCK" | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/arkor-ops/venv-$1-$hash"
if [ ! -f "$venv/.arkor-complete" ]; then
  echo "==> building $venv (the test $1 server)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --progress-bar off --upgrade "pip>=24" >&2
  "$venv/bin/python" -m pip install --quiet --progress-bar off --no-deps -r "$LOCK" >&2
  "$venv/bin/python" -c "$CHECK" >&2
  touch "$venv/.arkor-complete"
fi
echo "$venv/bin/python"
