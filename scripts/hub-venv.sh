#!/usr/bin/env bash
# The test Hub server's virtual environment: olah (a maintained Hugging Face Hub mirror that serves
# local git repos) from requirements/hub-server.lock, in its own venv because its pins conflict
# with the project's. Kept outside the repo, keyed by the lock's hash:
#   ~/.cache/arkor-ops/venv-hub-<lockhash>
# A no-op when complete. Prints the venv's python on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/hub-server.lock
PY=${PYTHON:-python3}
hash=$(sha256sum "$LOCK" | cut -c1-16)
venv="${XDG_CACHE_HOME:-$HOME/.cache}/arkor-ops/venv-hub-$hash"
if [ ! -f "$venv/.arkor-complete" ]; then
  echo "==> building $venv (olah, the test Hub server)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --progress-bar off --upgrade "pip>=24" >&2
  "$venv/bin/python" -m pip install --quiet --progress-bar off --no-deps -r "$LOCK" >&2
  "$venv/bin/python" -c 'import olah.server' >&2
  touch "$venv/.arkor-complete"
fi
echo "$venv/bin/python"
