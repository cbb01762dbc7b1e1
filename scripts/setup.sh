#!/usr/bin/env bash
# Create or refresh the project's virtual environment at .venv (idempotent, fast when current).
# Packages come from PyPI, pinned by requirements/constraints.txt; pip's download cache lives
# outside the repo (~/.cache/pip), so a second machine-local run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp_src=$(cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.arkor-stamp 2>/dev/null)" = "$stamp_src" ]; then
  exit 0
fi
echo "==> setting up .venv (first run downloads ~3 GB of wheels; later runs reuse ~/.cache/pip)"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip>=24" >/dev/null
.venv/bin/python -m pip install --progress-bar off -c requirements/constraints.txt \
  -e '.[train,flows,registry,dev,sidecar,studio,serve,prefect-worker]'
echo "$stamp_src" > .venv/.arkor-stamp
echo "==> .venv ready"
