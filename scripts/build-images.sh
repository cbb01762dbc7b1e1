#!/usr/bin/env bash
# Build (or reuse) the trainer, sidecar, flows and serving images with buildah, without any image
# registry:
#
#   scripts/build-images.sh            # all four images
#   scripts/build-images.sh sidecar    # one
#   scripts/build-images.sh --tag trainer   # print this checkout's trainer tag, if built
#   scripts/build-images.sh --tools         # only install the tools
#
# 1. The base image `debian:bookworm-slim` (the Dockerfiles' FROM) is made from Debian's
#    packages with mmdebstrap and stored under that exact name (docker.io/library/...).
# 2. Each image's wheels are downloaded on the host from its lock (pip download, binary wheels)
#    into ~/.cache/arkor-ops/wheels/<image>-<lock hash>/, linked into images/wheels/ for the
#    build (the Dockerfiles bind-mount that folder and install with --no-index), removed after.
# 3. buildah bud --isolation chroot builds images/<image>/Dockerfile, unchanged from what
#    `docker build` runs, tagged arkor-ops/<image>:dev and arkor-ops/<image>:<key>, where <key>
#    hashes the Dockerfile, the locks, the package source (pyproject.toml, README.md,
#    arkor_ops/) and the base image; an image whose key is already in the store is reused.
# 4. serving is built on this checkout's trainer image (its key hashes the trainer image's ID)
#    with llama-server from scripts/build-llama-server.sh (cached by version), linked into
#    images/llama.cpp/ for the build like the wheels.
#
# Everything is cached under ~/.cache/arkor-ops/images/ (the image store is
# ~/.cache/arkor-ops/images/storage, or $ARKOR_IMAGE_STORE), so a second run is a no-op.
# Tests run them with runc (tools/k8senv/oci.py); docs/images.md has the details and timings.
# Needs root and Debian's buildah, mmdebstrap and runc (installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
log() { printf '==> [images %4ss] %s\n' "$(($(date +%s) - t0))" "$*"; }

CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/arkor-ops
STORE=${ARKOR_IMAGE_STORE:-$CACHE/images/storage}
RUNROOT=${ARKOR_IMAGE_RUNROOT:-/run/arkor-ops/containers}
PY=${PYTHON:-python3}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
BASE=docker.io/library/debian:bookworm-slim
# Free disk a fresh build needs at its peak, in GB: buildah commits the trainer's ~7 GB pip
# layer through a tar stream, so for a moment it is on disk three times (measured: 18 GB).
declare -A NEED_GB=([trainer]=22 [sidecar]=3 [flows]=4 [serving]=3)
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(sidecar flows trainer serving)

bah() { buildah --root "$STORE" --runroot "$RUNROOT" "$@"; }

ensure_tools() {
  local missing=()
  for tool in buildah mmdebstrap runc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "build-images: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  log "installing ${missing[*]} (apt-get)"
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
    --no-install-recommends "${missing[@]}" >/dev/null
}

check_space() {
  mkdir -p "$STORE"
  local free_gb need
  need=${ARKOR_IMAGE_NEED_GB:-${NEED_GB[$1]:-3}}
  free_gb=$(df -Pk "$STORE" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$need" ]; then
    echo "build-images: $free_gb GB free under $STORE, building $1 needs about $need GB;" \
      "free some space (or set ARKOR_IMAGE_STORE to a bigger disk)" >&2
    exit 1
  fi
}

hash_files() { sha256sum "$@" | sha256sum | cut -c1-16; }

# The base image: minbase Debian, as slim as the Docker Hub image (no docs, man pages, locales).
base_image() {
  local recipe key stamp tmp ctr
  recipe="mmdebstrap minbase $SUITE $MIRROR updates+security nodoc v1"
  key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
  stamp="$CACHE/images/base-$key.id"
  if [ -f "$stamp" ] && [ "$(bah inspect --type image --format '{{.FromImageID}}' "$BASE" 2>/dev/null)" = "$(cat "$stamp")" ]; then
    log "reusing $BASE (mmdebstrap $SUITE, $key)"
    return 0
  fi
  log "making $BASE with mmdebstrap ($SUITE from $MIRROR)"
  tmp=$(mktemp -d -t arkor-base.XXXXXX)
  mmdebstrap --quiet --variant=minbase --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$SUITE" "$tmp/base.tar" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb http://deb.debian.org/debian-security $SUITE-security main"
  ctr=$(bah from scratch)
  bah add --quiet "$ctr" "$tmp/base.tar" / >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd bash "$ctr"
  bah commit --quiet --rm "$ctr" "$BASE" >/dev/null
  rm -rf "$tmp"
  mkdir -p "$(dirname "$stamp")"
  bah inspect --type image --format '{{.FromImageID}}' "$BASE" >"$stamp"
  log "$BASE ready"
}

# Download the wheels of an image's locks once per lock content.
wheelhouse() {
  local name=$1; shift
  local dir
  dir="$CACHE/wheels/$name-$(hash_files "$@")"
  if [ ! -f "$dir/.complete" ]; then
    log "downloading the wheels of $name's lock into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    local reqs=()
    for lock in "$@"; do reqs+=(-r "$lock"); done
    # The host's Python is the image's (3.11 on glibc >= 2.36), so its wheels fit the image.
    "$PY" -m pip download --quiet --progress-bar off --only-binary=:all: --no-deps \
      "${reqs[@]}" -d "$dir" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

clear_llama() { find images/llama.cpp -mindepth 1 -maxdepth 1 -not -name README.md -exec rm -rf {} + 2>/dev/null || true; }

fill_context() {
  find images/wheels -name '*.whl' -delete
  cp -l "$1"/*.whl images/wheels/ 2>/dev/null || cp "$1"/*.whl images/wheels/
}

locks_of() {
  echo "images/$1/requirements.lock"
  if [ -f "images/$1/gemma.lock" ]; then echo "images/$1/gemma.lock"; fi
}

# What image $1 is built on, besides the base: serving on this checkout's trainer image (whose
# key covers the package source) and llama.cpp's build recipe; nothing for the others.
built_on() {
  if [ "$1" = serving ]; then
    hash_files scripts/build-llama-server.sh
    bah inspect --type image --format '{{.FromImageID}}' "$(image_tag trainer)" 2>/dev/null || echo "no trainer"
  fi
}

# The tag of image $1 built from this checkout: its key hashes everything the build reads.
image_tag() {
  local name=$1 key locks
  mapfile -t locks < <(locks_of "$name")
  key=$( (hash_files "images/$name/Dockerfile" "${locks[@]}" pyproject.toml README.md .dockerignore;
          built_on "$name";
          find arkor_ops -type f -not -name '*.pyc' -not -path '*/__pycache__/*' -print0 \
            | sort -z | xargs -0 sha256sum;
          bah inspect --type image --format '{{.FromImageID}}' "$BASE") | sha256sum | cut -c1-16)
  echo "localhost/arkor-ops/$name:$key"
}

build_image() {
  local name=$1 dockerfile="images/$1/Dockerfile" locks key tag wheels
  mapfile -t locks < <(locks_of "$name")
  tag=$(image_tag "$name")
  key=${tag##*:}
  if bah inspect --type image "$tag" >/dev/null 2>&1; then
    bah tag "$tag" "localhost/arkor-ops/$name:dev"
    log "reusing $tag (Dockerfile, locks and source unchanged)"
    return 0
  fi
  check_space "$name"
  wheels=$(wheelhouse "$name" "${locks[@]}")
  fill_context "$wheels"
  local args=()
  if [ "$name" = serving ]; then
    local trainer llama
    trainer=$(image_tag trainer)
    bah inspect --type image "$trainer" >/dev/null 2>&1 \
      || { echo "build-images: serving is built on $trainer: build trainer first" >&2; exit 1; }
    llama=$(scripts/build-llama-server.sh)
    clear_llama
    cp -al "$llama"/. images/llama.cpp/ 2>/dev/null || cp -a "$llama"/. images/llama.cpp/
    args=(--build-arg "TRAINER_IMAGE=$trainer")
  fi
  log "building $tag with buildah (log: $CACHE/images/$name-build.log)"
  mkdir -p "$CACHE/images"
  if ! bah bud --isolation chroot --pull=never --layers --force-rm --quiet "${args[@]}" \
      -f "$dockerfile" -t "$tag" -t "localhost/arkor-ops/$name:dev" . \
      >"$CACHE/images/$name-build.log" 2>&1; then
    tail -n 40 "$CACHE/images/$name-build.log" >&2
    echo "build-images: building $name failed (full log: $CACHE/images/$name-build.log)" >&2
    exit 1
  fi
  # Older builds of this image: drop their tags (shared layers stay as the build cache).
  bah images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/arkor-ops/$name:" \
    | grep -v -e ":$key\$" -e ':dev$' | while read -r old; do bah rmi "$old" >/dev/null || true; done || true
  log "$tag ready ($(bah images --format '{{.Size}}' "$tag" | head -n 1))"
}

# --tools: only install buildah, mmdebstrap and runc when missing (test.sh runs it before the
# background build, so its apt-get never races another one).
if [ "${1:-}" = "--tools" ]; then
  ensure_tools
  exit 0
fi

# --tag NAME: print the tag this checkout's NAME image has, if it is built (exit 1 if not).
if [ "${1:-}" = "--tag" ]; then
  tag=$(image_tag "${2:?usage: build-images.sh --tag IMAGE}")
  bah inspect --type image "$tag" >/dev/null 2>&1 || exit 1
  echo "$tag"
  exit 0
fi

trap 'find images/wheels -name "*.whl" -delete 2>/dev/null || true; clear_llama' EXIT
ensure_tools
mkdir -p "$STORE"
base_image
for name in "${images[@]}"; do
  [ -f "images/$name/Dockerfile" ] || { echo "build-images: no images/$name/Dockerfile" >&2; exit 2; }
  build_image "$name"
done
log "done"
