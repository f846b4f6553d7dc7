#!/usr/bin/env bash
# Build Helm from the Go module proxy (no GitHub release download), for deploy/helm/den's tests.
#
#   bash test/cluster/helm.sh          # builds helm if missing; prints the binary's path last
#
# `go install helm.sh/helm/v4/cmd/helm@VERSION` builds with Helm's own go.mod, so the dependency
# versions are exactly upstream's. Everything lives outside the checkout, keyed by version:
#   $DEN_K8S_CACHE/helm/<version>/  gomod/ (GOMODCACHE)  gocache/ (GOCACHE)  logs/  bin/helm
# Its own caches, not the test cluster's: Helm links k8s.io/* of a newer minor than the cluster's
# binaries, so nothing compiled there could be reused. A stamp (bin/.helm.ok holding the version)
# makes a warm run cost nothing; an interrupted build resumes from the Go caches. Safe to run
# concurrently (flock).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$HERE/versions.sh"

log() { printf '[helm %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[helm] ERROR: %s\n' "$*" >&2; exit 1; }

dir=$DEN_K8S_CACHE/helm/$HELM_VERSION
bin=$dir/bin
if [[ -x $bin/helm && "$(cat "$bin/.helm.ok" 2>/dev/null)" == "$HELM_VERSION" ]]; then
  log "helm $HELM_VERSION: cached"
  echo "$bin/helm"
  exit 0
fi

GO=$(command -v go || true)
[[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n $GO ]] || die "no Go toolchain found. Fix: install Go >= 1.26 (e.g. at /usr/local/go) and put it on PATH."
gover=$("$GO" env GOVERSION)
minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$gover")
(( minor >= 26 )) || die "Go $gover is too old for Helm $HELM_VERSION (its go.mod says go 1.26). Fix: install Go >= 1.26."

mkdir -p "$bin" "$dir/logs"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then log "another build of helm $HELM_VERSION is running; waiting for it"; flock 9; fi
if [[ -x $bin/helm && "$(cat "$bin/.helm.ok" 2>/dev/null)" == "$HELM_VERSION" ]]; then
  log "helm $HELM_VERSION: built by the other run"; echo "$bin/helm"; exit 0
fi

export GOMODCACHE=$dir/gomod GOCACHE=$dir/gocache GOPATH=$dir/gopath GOBIN=$bin
export GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
# What Helm's Makefile sets for a release build (internal/version), minus the git commit.
ld="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
logf=$dir/logs/build.log
log "building helm $HELM_VERSION with $gover (log: $logf; a few minutes on 2 cores)"
start=$(date +%s)
if ! nice -n "${DEN_K8S_NICE:-10}" "$GO" install -trimpath -ldflags "$ld" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >"$logf" 2>&1; then
  tail -n 15 "$logf" >&2
  die "go install of helm $HELM_VERSION failed. Log: $logf
  Fix: a network error means the Go module proxy was unreachable (retry; the run resumes from the caches); \"no space\" means free disk under $DEN_K8S_CACHE."
fi
"$bin/helm" version --short >>"$logf" 2>&1 || die "the built helm does not run; see $logf"
echo "$HELM_VERSION" >"$bin/.helm.ok"
log "helm $HELM_VERSION: built in $(( $(date +%s) - start ))s"
echo "$bin/helm"
