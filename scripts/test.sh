#!/usr/bin/env bash
# The whole test suite after lint and type checks (called by `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
