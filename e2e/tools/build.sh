#!/usr/bin/env bash
# Builds the real Kubernetes test tools from Go modules and links them into .tools/bin/.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler  (k8s.io/kubernetes, $K8S_VERSION)
#   etcd                                                     (go.etcd.io/etcd/server/v3, $ETCD_VERSION)
#   kwok                                                     (sigs.k8s.io/kwok, $KWOK_VERSION)
#   helm                                                     (helm.sh/helm/v3, $HELM_VERSION)
#
# Idempotent: binaries live in a cache outside the checkout, keyed by a hash of the pinned versions and the
# go.mod/go.sum files, so a fresh clone on the same machine reuses them and a second run takes a second.
# Versions are pinned in e2e/tools/versions.env (the only place).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

key=$(cat "$here/versions.env" "$here"/*/go.mod "$here"/*/go.sum "$here/build.sh" | sha256sum | cut -c1-16)
cache="${GPUFED_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpufed}/tools-$key"
bin="$cache/bin"
mkdir -p "$bin" "$root/.tools/bin"

export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local

step() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# build NAME DIR PKG... [-- LDFLAGS]: builds PKG(s) in module DIR unless $bin/NAME.ok exists.
build() {
  local name=$1 dir=$2; shift 2
  local ld="-s -w"
  local pkgs=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; ld="$ld $*"; break; fi
    pkgs+=("$1"); shift
  done
  if [ -f "$bin/$name.ok" ]; then return 0; fi
  step "building $name (first build only; this takes minutes on 2 cores)"
  local t0=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$ld" -o "$bin/" "${pkgs[@]}")
  touch "$bin/$name.ok"
  step "built $name in $((SECONDS - t0))s"
}

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ld="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"

build etcd etcd go.etcd.io/etcd/server/v3
build kwok kwok sigs.k8s.io/kwok/cmd/kwok -- "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build helm helm helm.sh/helm/v3/cmd/helm -- "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
build kube k8s k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler -- "$k8s_ld"

# etcd's main package is named server/v3, so go build names the binary "v3".
if [ -f "$bin/v3" ]; then mv "$bin/v3" "$bin/etcd"; fi

for b in kube-apiserver kube-controller-manager kube-scheduler etcd kwok helm; do
  [ -x "$bin/$b" ] || { echo "missing $bin/$b after build" >&2; exit 1; }
  ln -sfn "$bin/$b" "$root/.tools/bin/$b"
done
step "tools ready in $bin (linked from .tools/bin)"
