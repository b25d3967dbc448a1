#!/usr/bin/env bash
# Builds the real Kubernetes test tools from Go modules and links them into .tools/bin/.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes, $K8S_VERSION)
#   kubelet (the real-node members; runc, containerd and the CNI  (k8s.io/kubernetes, $K8S_VERSION)
#            plugins come from Debian: install-node.sh)
#   etcd                                                     (go.etcd.io/etcd/server/v3, $ETCD_VERSION)
#   kwok                                                     (sigs.k8s.io/kwok, $KWOK_VERSION)
#   helm                                                     (helm.sh/helm/v3, $HELM_VERSION)
#   versitygw (S3-compatible server, storage e2e; ADR 0029)  (github.com/versity/versitygw, $VERSITYGW_VERSION)
#   kueue (+ its CRDs in kueue-crds/ beside it)              (sigs.k8s.io/kueue, $KUEUE_VERSION; only with
#                                                             --with-peers: the peer benchmark of make bench)
#   kueue-worker-rate                                        (the same module with kueue/multikueue-worker-rate.patch:
#                                                             MultiKueue's worker clients rate-limited from the
#                                                             environment; --with-peers, the peer run's 2nd Kueue row)
#
# Idempotent: binaries live in a cache outside the checkout, one folder per module keyed by a hash of its
# go.mod/go.sum and its version flags, so a fresh clone on the same machine reuses them and a second run takes
# a second; changing one module rebuilds only that one.
# Versions are pinned in e2e/tools/versions.env (the only place).
set -euo pipefail

with_peers=0
for a in "$@"; do
  case "$a" in
    --with-peers) with_peers=1 ;;
    *) echo "usage: $0 [--with-peers]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root="${GPUFED_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpufed}/tools"
mkdir -p "$cache_root" "$root/.tools/bin"

export CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local

step() { printf '[tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# build DIR BINARY... -- PKG... [-- LDFLAGS]: builds PKG(s) of module DIR into the cache and links BINARY(s).
build() {
  local dir=$1; shift
  local bins=() pkgs=() ld="-s -w"
  while [ "$1" != "--" ]; do bins+=("$1"); shift; done; shift
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; ld="$ld $*"; break; fi
    pkgs+=("$1"); shift
  done
  local key
  key=$(printf '%s\n' "$ld" "${pkgs[@]}" | cat - "$here/$dir/go.mod" "$here/$dir/go.sum" | sha256sum | cut -c1-12)
  local out="$cache_root/$dir-$key"
  if [ ! -f "$out/.ok" ]; then
    step "building $dir: ${bins[*]} (first build only; this takes minutes on 2 cores)"
    local t0=$SECONDS
    rm -rf "$out" && mkdir -p "$out"
    (cd "$here/$dir" && go build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}")
    # etcd's main package is go.etcd.io/etcd/server/v3, so go build names its binary "server".
    if [ "$dir" = etcd ] && [ -f "$out/server" ]; then mv "$out/server" "$out/etcd"; fi
    touch "$out/.ok"
    step "built $dir in $((SECONDS - t0))s"
  fi
  local b
  for b in "${bins[@]}"; do
    [ -x "$out/$b" ] || { echo "missing $out/$b after build" >&2; exit 1; }
    ln -sfn "$out/$b" "$root/.tools/bin/$b"
  done
}

# The same Kueue with kueue/multikueue-worker-rate.patch applied to a copy of its module, built through a
# `replace` in a copy of kueue/go.mod (same dependencies, same go.sum); cached like build() by a hash of
# go.mod, go.sum, the patch and the flags. Only the peer benchmark's second Kueue row uses it.
build_patched_kueue() {
  local patch="$here/kueue/multikueue-worker-rate.patch"
  local ld="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
  local key
  key=$(printf '%s\n' "$ld" | cat - "$here/kueue/go.mod" "$here/kueue/go.sum" "$patch" | sha256sum | cut -c1-12)
  local out="$cache_root/kueue-worker-rate-$key"
  if [ ! -f "$out/.ok" ]; then
    step "building kueue-worker-rate: Kueue with $(basename "$patch") (first build only; reuses kueue's build cache)"
    local t0=$SECONDS
    rm -rf "$out" && mkdir -p "$out/src"
    cp -r "$(cd "$here/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)" "$out/src/kueue"
    chmod -R u+w "$out/src/kueue"
    patch --quiet -d "$out/src/kueue" -p1 < "$patch"
    mkdir "$out/src/main" && cp "$here/kueue/go.mod" "$here/kueue/go.sum" "$out/src/main/"
    (cd "$out/src/main" && go mod edit -replace sigs.k8s.io/kueue=../kueue \
      && go build -trimpath -ldflags "$ld" -o "$out/kueue-worker-rate" sigs.k8s.io/kueue/cmd/kueue)
    rm -rf "$out/src"
    touch "$out/.ok"
    step "built kueue-worker-rate in $((SECONDS - t0))s"
  fi
  ln -sfn "$out/kueue-worker-rate" "$root/.tools/bin/kueue-worker-rate"
}

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
k8s_ld="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 \
-X k8s.io/client-go/pkg/version.gitMinor=$minor"

build etcd etcd -- go.etcd.io/etcd/server/v3
build kwok kwok -- sigs.k8s.io/kwok/cmd/kwok -- "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
build helm helm -- helm.sh/helm/v3/cmd/helm -- "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
# The S3-compatible server of the storage e2e tests (ADR 0029): a real gateway over a local directory.
build versitygw versitygw -- github.com/versity/versitygw/cmd/versitygw -- "-X main.Version=$VERSITYGW_VERSION"
build k8s kube-apiserver kube-controller-manager kube-scheduler kubectl -- k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubectl -- "$k8s_ld"
# The kubelet of real-node members; its own cache folder, so the control plane above is not rebuilt.
build k8s kubelet -- k8s.io/kubernetes/cmd/kubelet -- "$k8s_ld"
"$here/install-node.sh"
if [ "$with_peers" = 1 ]; then
  build kueue kueue -- sigs.k8s.io/kueue/cmd/kueue -- "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
  # Kueue's CRDs come from its module (config/components/crd/bases), kept beside the binary for the harness.
  kueue_out=$(dirname "$(readlink -f "$root/.tools/bin/kueue")")
  [ -d "$kueue_out/kueue-crds" ] || { cp -r "$(cd "$here/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)/config/components/crd/bases" "$kueue_out/kueue-crds.tmp" && chmod -R u+w "$kueue_out/kueue-crds.tmp" && mv "$kueue_out/kueue-crds.tmp" "$kueue_out/kueue-crds"; }
  build_patched_kueue
fi
step "tools ready in .tools/bin: kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd kwok helm versitygw$([ "$with_peers" = 1 ] && echo ' kueue kueue-worker-rate')"
