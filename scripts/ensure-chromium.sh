#!/usr/bin/env bash
# Make sure headless Chromium (Debian's package) is installed for the `browser` tests.
# Idempotent: does nothing when `chromium` is already on PATH. Called by `make test`.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure-chromium: not root and no sudo; install it with: apt-get install chromium" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: no apt-get here; install Chromium yourself (the browser tests need it)" >&2
  exit 1
fi
echo "==> installing Chromium for the browser tests (apt-get, ~100 MB)"
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
chromium --version
