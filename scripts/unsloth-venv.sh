#!/usr/bin/env bash
# Build the Unsloth virtual environment the trainer image runs, for the `unsloth` tests:
#   ~/.cache/arkor-ops/venv-unsloth-<lockhash>   (outside the repo, keyed by the lock's hash)
# from images/trainer/requirements.lock (binary wheels only) plus this repo (`pip install --no-deps
# -e .`). A no-op when that venv is complete. Prints the venv's python on stdout.
# On a host without CUDA, torchvision is uninstalled afterwards: its CUDA-built ops break
# `import unsloth` in CPU mode (docs/worker.md). pip's cache stays outside the repo (~/.cache/pip).
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=images/trainer/requirements.lock
PY=${PYTHON:-python3}
hash=$(sha256sum < "$LOCK" | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}
venv="$cache/arkor-ops/venv-unsloth-$hash"
if [ -f "$venv/.arkor-complete" ] && [ -x "$venv/bin/python" ]; then
  # Re-point the editable install at this checkout (cheap), in case the repo moved.
  if [ "$("$venv/bin/python" -c 'import arkor_ops,os;print(os.path.dirname(os.path.dirname(arkor_ops.__file__)))' 2>/dev/null)" != "$PWD" ]; then
    "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >&2
  fi
  echo "$venv/bin/python"
  exit 0
fi
start=$(date +%s)
echo "==> building $venv (first run downloads ~4 GB of wheels; later runs reuse ~/.cache/pip)" >&2
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$PY" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --progress-bar off --upgrade "pip>=24" >&2
"$venv/bin/python" -m pip install --progress-bar off --only-binary=:all: -r "$LOCK" >&2
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . >&2
if ! "$venv/bin/python" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  "$venv/bin/python" -m pip uninstall --yes --quiet torchvision >&2
fi
HF_HUB_OFFLINE=1 "$venv/bin/python" -c 'import unsloth' >&2
touch "$venv/.arkor-complete"
echo "==> $venv ready in $(( $(date +%s) - start )) s" >&2
echo "$venv/bin/python"
