#!/usr/bin/env bash
# Builds the Kubernetes test tooling from Go modules and caches it OUTSIDE the repository:
#   etcd, kube-apiserver, kube-controller-manager, kube-proxy, kubectl (all from tests/k8s/{etcd,kube}
#   wrapper modules) and helm (go install), at the versions pinned in tests/k8s/versions.env.
#
# Output: ${KRES_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kres-operator/tools}/<version-key>/bin
# A second run is a no-op: a binary is skipped when it exists for the version key AND its stamp
# (bin/.<name>.stamp, a hash of its wrapper module's go.mod + go.sum) matches. Adding a tool or a
# module therefore builds only what is missing or stale; the Go build cache (GOCACHE) keeps the
# rebuild of a stale binary to a re-link.
#
# Usage:
#   tests/k8s/build-tools.sh                  build what is missing (idempotent)
#   tests/k8s/build-tools.sh bin-dir          print the bin directory for the pinned versions
#   tests/k8s/build-tools.sh update-modules   regenerate tests/k8s/{etcd,kube}/go.mod + go.sum
#                                             after editing versions.env
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"

if command -v go >/dev/null 2>&1; then GO=${GO:-go}; else GO=${GO:-/usr/local/go/bin/go}; fi
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
TOOLS_ROOT=${KRES_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kres-operator/tools}
BIN="$TOOLS_ROOT/$KEY/bin"

k8s_minor() { local v=${KUBERNETES_VERSION#v}; v=${v#*.}; echo "${v%%.*}"; }
k8s_major() { local v=${KUBERNETES_VERSION#v}; echo "${v%%.*}"; }

die() { echo "build-tools.sh: $*" >&2; exit 1; }

# Regenerates the wrapper modules from versions.env. The replace list is derived from the
# `=> ./staging/` lines of the upstream k8s.io/kubernetes go.mod for the pinned tag.
update_modules() {
    local upstream
    upstream=$("$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$upstream" ] || die "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION"
    {
        echo "module kres-operator.invalid/tests/k8s/kube"
        echo
        echo "go $(sed -n 's/^go //p' "$upstream")"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "tool ("
        for c in kube-apiserver kube-controller-manager kube-proxy kubectl; do echo "	k8s.io/kubernetes/cmd/$c"; done
        echo ")"
        echo
        echo "replace ("
        grep -E '=> \./staging/' "$upstream" | awk -v s="$KUBERNETES_STAGING_VERSION" '{print "\t" $1 " => " $1 " " s}'
        echo ")"
    } >"$HERE/kube/go.mod"
    rm -f "$HERE/kube/go.sum"
    (cd "$HERE/kube" && "$GO" mod tidy)
    cat >"$HERE/etcd/go.mod" <<EOF
module kres-operator.invalid/tests/k8s/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
    rm -f "$HERE/etcd/go.sum"
    (cd "$HERE/etcd" && "$GO" mod tidy)
}

# The committed go.mod files must match versions.env; otherwise the cache key would lie.
check_modules() {
    grep -Eq "^(require)?\s*k8s\.io/kubernetes $KUBERNETES_VERSION( // indirect)?\$" "$HERE/kube/go.mod" ||
        die "tests/k8s/kube/go.mod does not require k8s.io/kubernetes $KUBERNETES_VERSION; run: tests/k8s/build-tools.sh update-modules"
    if grep -E '^\s+k8s\.io/.* => k8s\.io/' "$HERE/kube/go.mod" | grep -v " $KUBERNETES_STAGING_VERSION\$" | grep -q .; then
        die "tests/k8s/kube/go.mod has staging replaces not at $KUBERNETES_STAGING_VERSION; run: tests/k8s/build-tools.sh update-modules"
    fi
    grep -Eq "^(require)?\s*go\.etcd\.io/etcd/server/v3 $ETCD_VERSION( // indirect)?\$" "$HERE/etcd/go.mod" ||
        die "tests/k8s/etcd/go.mod does not require etcd $ETCD_VERSION; run: tests/k8s/build-tools.sh update-modules"
}

# Hash of a wrapper module's go.mod + go.sum: what a binary built from it depends on.
module_stamp() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -d' ' -f1; }

# build NAME DIR PACKAGE LDFLAGS: one `go build` at a time, niced, written atomically into $BIN.
build() {
    local name=$1 dir=$2 pkg=$3 ldflags=$4 start stamp
    stamp=$(module_stamp "$dir")
    if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        echo "  $name: cached"
        return
    fi
    # No binary, no stamp (built before stamps existed) or another stamp: (re)build.
    start=$(date +%s)
    echo "  $name: building $pkg ..."
    (cd "$dir" && nice -n 10 "$GO" build -trimpath -ldflags "-s -w $ldflags" -o "$BIN/.$name.tmp" "$pkg")
    mv -f "$BIN/.$name.tmp" "$BIN/$name"
    echo "$stamp" >"$BIN/.$name.stamp"
    echo "  $name: built in $(($(date +%s) - start)) s"
    echo "$name $(($(date +%s) - start))s" >>"$TOOLS_ROOT/$KEY/build-times.txt"
}

build_helm() {
    local start hv=helm.sh/helm/v3
    if [ -x "$BIN/helm" ]; then
        echo "  helm: cached"
        return
    fi
    start=$(date +%s)
    echo "  helm: go install $hv/cmd/helm@$HELM_VERSION ..."
    local gobin
    gobin=$(mktemp -d "$TOOLS_ROOT/$KEY/.helm.XXXXXX")
    # The k8sVersion* variables make helm's default .Capabilities match the apiserver we build.
    GOBIN="$gobin" nice -n 10 "$GO" install -trimpath -ldflags "-s -w \
        -X $hv/internal/version.version=$HELM_VERSION \
        -X $hv/pkg/lint/rules.k8sVersionMajor=$(k8s_major) -X $hv/pkg/lint/rules.k8sVersionMinor=$(k8s_minor) \
        -X $hv/pkg/chartutil.k8sVersionMajor=$(k8s_major) -X $hv/pkg/chartutil.k8sVersionMinor=$(k8s_minor)" \
        "$hv/cmd/helm@$HELM_VERSION"
    mv -f "$gobin/helm" "$BIN/helm"
    rmdir "$gobin"
    echo "  helm: built in $(($(date +%s) - start)) s"
    echo "helm $(($(date +%s) - start))s" >>"$TOOLS_ROOT/$KEY/build-times.txt"
}

main() {
    case "${1:-build}" in
    bin-dir) echo "$BIN"; return ;;
    update-modules) update_modules; return ;;
    build) ;;
    *) die "unknown command '$1' (expected: build, bin-dir, update-modules)" ;;
    esac
    command -v "$GO" >/dev/null 2>&1 || die "Go toolchain not found (set GO=/path/to/go)"
    check_modules
    mkdir -p "$BIN"
    # Serialise concurrent runs (two `make test` at once) on the same cache.
    exec 9>"$TOOLS_ROOT/$KEY/.lock"
    flock 9

    local start kv ldk
    start=$(date +%s)
    echo "kres-operator k8s tooling ($KEY) in $BIN"
    kv=$KUBERNETES_VERSION
    # Version stamping so /version and `kubectl version` report the real release.
    ldk=""
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldk="$ldk -X $p.gitVersion=$kv -X $p.gitMajor=$(k8s_major) -X $p.gitMinor=$(k8s_minor) -X $p.gitTreeState=clean"
    done
    build etcd "$HERE/etcd" . ""
    build_helm
    build kube-apiserver "$HERE/kube" k8s.io/kubernetes/cmd/kube-apiserver "$ldk"
    build kube-controller-manager "$HERE/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$ldk"
    build kubectl "$HERE/kube" k8s.io/kubernetes/cmd/kubectl "$ldk"
    build kube-proxy "$HERE/kube" k8s.io/kubernetes/cmd/kube-proxy "$ldk"
    echo "done in $(($(date +%s) - start)) s"
}

main "$@"
