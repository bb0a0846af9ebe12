#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the tests, from Go modules:
#   boss-k8s  one multi-call binary: etcd (embedded), kube-apiserver, kube-controller-manager,
#             kube-scheduler, kubelet, kube-proxy, kubectl (k8s.io/kubernetes v1.37.2, see go.mod)
#   helm      the real Helm CLI (helm.sh/helm/v3, see helm/go.mod)
# into .cache/k8s/bin/ at the repository root (or $BOSS_K8S_BIN), with symlinks named after
# each component so the folder can go on PATH. Cached: a stamp holds a hash of this script,
# the go.mod/go.sum/*.go inputs and the Go version; when it matches and the binaries are
# there, nothing is built.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${BOSS_K8S_BIN:-$ROOT/.cache/k8s/bin}"
STAMP="$BIN/.stamp"

K8S_VERSION=v1.37.2          # must match k8s.io/kubernetes in go.mod
HELM_VERSION=v3.22.0         # must match helm.sh/helm/v3 in helm/go.mod
BUILD_DATE=2026-01-01T00:00:00Z  # fixed: reproducible binaries
LINKS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

command -v go >/dev/null 2>&1 || { [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"; }
command -v go >/dev/null 2>&1 || { echo "build.sh: needs the Go toolchain (go 1.26+) on PATH" >&2; exit 1; }

inputs_hash() {
  {
    go version
    echo "$K8S_VERSION $HELM_VERSION $BUILD_DATE ${LINKS[*]}"
    cd "$HERE"
    find . -maxdepth 2 \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) -type f \
      | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done
  } | sha256sum | cut -d' ' -f1
}

have_all() {
  [ -x "$BIN/boss-k8s" ] && [ -x "$BIN/helm" ] || return 1
  for l in "${LINKS[@]}"; do [ -e "$BIN/$l" ] || return 1; done
}

hash="$(inputs_hash)"
if [ "${1:-}" != "--force" ] && have_all && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
  echo "k8s binaries up to date in $BIN (stamp ${hash:0:12})"
  exit 0
fi

mkdir -p "$BIN"
start=$(date +%s)
export CGO_ENABLED=0
# -buildvcs=false: the modules are built from the module cache, not this repository's git.
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

kv() { # -X for both places Kubernetes keeps its version, as hack/lib/version.sh does
  local key=$1 val=$2
  echo "-X k8s.io/component-base/version.$key=$val -X k8s.io/client-go/pkg/version.$key=$val"
}
major=${K8S_VERSION#v}; minor=${major#*.}; minor=${minor%%.*}; major=${major%%.*}
K8S_LDFLAGS="-s -w $(kv gitVersion "$K8S_VERSION") $(kv gitMajor "$major") $(kv gitMinor "$minor") \
$(kv gitTreeState clean) $(kv buildDate "$BUILD_DATE")"

echo "building boss-k8s (k8s.io/kubernetes $K8S_VERSION: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl) ..."
t=$(date +%s)
(cd "$HERE" && go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$BIN/boss-k8s.tmp" .)
mv -f "$BIN/boss-k8s.tmp" "$BIN/boss-k8s"
echo "  boss-k8s: $(( $(date +%s) - t ))s, $(du -h "$BIN/boss-k8s" | cut -f1)"

echo "building helm ($HELM_VERSION) ..."
t=$(date +%s)
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
(cd "$HERE/helm" && go build -trimpath -ldflags "$HELM_LDFLAGS" -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm)
mv -f "$BIN/helm.tmp" "$BIN/helm"
echo "  helm: $(( $(date +%s) - t ))s, $(du -h "$BIN/helm" | cut -f1)"

for l in "${LINKS[@]}"; do ln -sfn boss-k8s "$BIN/$l"; done
echo "$hash" > "$STAMP"
echo "built into $BIN in $(( $(date +%s) - start ))s: $("$BIN/boss-k8s" version), helm $("$BIN/helm" version --short)"
