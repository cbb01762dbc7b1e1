#!/usr/bin/env bash
# Build the pinned upstream control-plane binaries for the local test cluster.
#
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl from the
# versions pinned in go.mod into ~/.cache/arkor-ops/k8s/<k8s-version>/bin/. A second run is a
# no-op: the binaries exist and the stamp matches go.mod + go.sum. Also installs the Debian
# packages the node agent needs (iproute2, util-linux, openssl) when they are missing.
#
# Environment:
#   ARKOR_K8S_CACHE   cache root (default: ~/.cache/arkor-ops)
#   ARKOR_GO          go binary (default: go on PATH, else /usr/local/go/bin/go)
# Prints the bin directory as its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${ARKOR_K8S_CACHE:-${HOME}/.cache/arkor-ops}"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "${here}/go.mod")"
bin_dir="${cache_root}/k8s/${k8s_version}/bin"
stamp="${bin_dir}/.stamp"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

ensure_apt_packages() {
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
    command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ((${#missing[@]})); then
        echo "k8s-testenv: installing ${missing[*]}" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    fi
}

want_stamp() {
    cat "${here}/go.mod" "${here}/go.sum" | sha256sum | cut -d' ' -f1
}

is_built() {
    local b
    for b in "${binaries[@]}"; do
        [[ -x "${bin_dir}/${b}" ]] || return 1
    done
    [[ -f "${stamp}" && "$(cat "${stamp}")" == "$(want_stamp)" ]]
}

ensure_apt_packages

if is_built; then
    echo "k8s binaries ${k8s_version}: cached" >&2
    echo "${bin_dir}"
    exit 0
fi

go_bin="${ARKOR_GO:-$(command -v go || echo /usr/local/go/bin/go)}"
export GOMODCACHE="${cache_root}/go/mod"
export GOCACHE="${cache_root}/go/build"
export GOFLAGS="-trimpath -mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN=local

start=$(date +%s)
tmp_dir="$(mktemp -d "${cache_root}/k8s/.build.XXXXXX" 2>/dev/null \
    || { mkdir -p "${cache_root}/k8s"; mktemp -d "${cache_root}/k8s/.build.XXXXXX"; })"
trap 'rm -rf "${tmp_dir}"' EXIT
ldflags="-s -w"
# Version strings so `kubectl version` and /version report the pinned release.
vpkg="k8s.io/component-base/version"
ldflags+=" -X ${vpkg}.gitVersion=${k8s_version} -X ${vpkg}.gitTreeState=clean"
ldflags+=" -X ${vpkg}.gitMajor=$(cut -d. -f1 <<<"${k8s_version#v}")"
ldflags+=" -X ${vpkg}.gitMinor=$(cut -d. -f2 <<<"${k8s_version}")"

cd "${here}"
echo "k8s-testenv: building ${k8s_version} into ${bin_dir} (slow when cold)" >&2
"${go_bin}" build -ldflags="${ldflags}" -o "${tmp_dir}/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
"${go_bin}" build -ldflags="-s -w" -o "${tmp_dir}/etcd" go.etcd.io/etcd/server/v3

mkdir -p "${bin_dir}"
for b in "${binaries[@]}"; do
    mv -f "${tmp_dir}/${b}" "${bin_dir}/${b}"
done
want_stamp >"${stamp}"
echo "k8s binaries ${k8s_version}: built in $(($(date +%s) - start))s" >&2
echo "${bin_dir}"
