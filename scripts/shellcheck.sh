#!/usr/bin/env bash
# Run shellcheck on every shell script the repo tracks (part of `make lint`). When it is missing,
# installs Debian's package first (as root, through apt-get), as the other set-up scripts do.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "shellcheck.sh: shellcheck is missing; install it with: apt-get install shellcheck" >&2
    exit 1
  fi
  echo "==> installing shellcheck (apt-get)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck >/dev/null
fi
mapfile -t scripts < <(git ls-files '*.sh' scripts/local-cluster)
shellcheck "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
