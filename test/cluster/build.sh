#!/usr/bin/env bash
# Build den's test Kubernetes from the Go module proxy (no registry, no GitHub downloads).
#
#   bash test/cluster/build.sh          # builds what is missing; prints the bin dir last
#
# Everything lives outside the checkout, keyed by version: $DEN_K8S_CACHE/<k8s version>/
#   gomod/ (GOMODCACHE)  gocache/ (GOCACHE)  src/ (wrapper modules)  logs/  bin/
# Each piece has a stamp (bin/.<piece>.ok holding its version), so a warm machine rebuilds
# nothing and an interrupted build resumes where it stopped. Safe to run concurrently (flock).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$HERE/versions.sh"

log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }

GO=$(command -v go || true)
[[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n $GO ]] || die "no Go toolchain found. Fix: install Go >= 1.24 (e.g. at /usr/local/go) and put it on PATH."
gover=$("$GO" env GOVERSION)             # go1.26.8
minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$gover")
(( minor >= 24 )) || die "Go $gover is too old for Kubernetes $K8S_VERSION. Fix: install Go >= 1.24."

mkdir -p "$DEN_K8S_BIN" "$DEN_K8S_DIR/logs" "$DEN_K8S_DIR/src"
exec 9>"$DEN_K8S_DIR/.build.lock"
if ! flock -n 9; then log "another build of $K8S_VERSION is running; waiting for it"; flock 9; fi

export GOMODCACHE=$DEN_K8S_DIR/gomod GOCACHE=$DEN_K8S_DIR/gocache
export GOFLAGS="-modcacherw -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
export GOPATH=$DEN_K8S_DIR/gopath
NICE=(nice -n "${DEN_K8S_NICE:-10}")

step=""
trap 'rc=$?; [[ $rc -ne 0 && -n $step ]] && { printf -- "--- last lines of %s:\n" "$DEN_K8S_DIR/logs/$step.log"; tail -n 15 "$DEN_K8S_DIR/logs/$step.log"; } >&2; [[ $rc -ne 0 && -n $step ]] && printf "[build] ERROR: step \"%s\" failed (exit %s). Log: %s\n  Fix: read the log; a network error means the Go module proxy was unreachable (retry), \"no space\" means free disk under %s. Re-running build.sh resumes; to start a piece over delete %s/src/<piece>.\n" "$step" "$rc" "$DEN_K8S_DIR/logs/$step.log" "$DEN_K8S_CACHE" "$DEN_K8S_DIR" >&2' EXIT

ok() { [[ -x $DEN_K8S_BIN/$2 && -f $DEN_K8S_BIN/.$1.ok && "$(cat "$DEN_K8S_BIN/.$1.ok")" == "$3" ]]; }
stamp() { echo "$2" >"$DEN_K8S_BIN/.$1.ok"; }
# run STEP CMD...: output to logs/STEP.log, time + peak RSS to logs/STEP.time
run() {
  step=$1; shift
  log "$step: $*  (log: $DEN_K8S_DIR/logs/$step.log)"
  /usr/bin/time -v -o "$DEN_K8S_DIR/logs/$step.time" "$@" >"$DEN_K8S_DIR/logs/$step.log" 2>&1
  log "$step: done in $(sed -n 's/.*Elapsed (wall clock) time.*: //p' "$DEN_K8S_DIR/logs/$step.time"), peak RSS $(( $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$DEN_K8S_DIR/logs/$step.time") / 1024 )) MB"
  step=""
}

# ---- the upstream go.mod tells us the staging modules, godebug, go line and etcd pin ----
step=download-k8s
modjson=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>"$DEN_K8S_DIR/logs/download-k8s.log") ||
  { printf '%s\n' "$modjson" >>"$DEN_K8S_DIR/logs/download-k8s.log"; exit 1; }
step=""
gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$modjson")
info=$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",$/\1/p' <<<"$modjson")
[[ -f $gomod ]] || die "could not find go.mod of k8s.io/kubernetes@$K8S_VERSION"
[[ -n $ETCD_VERSION ]] || ETCD_VERSION=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$gomod")
[[ -n $ETCD_VERSION ]] || die "could not read the etcd version pinned by k8s.io/kubernetes@$K8S_VERSION"
staging=v0.${K8S_VERSION#v1.}            # v1.34.4 -> v0.34.4

kube_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
if ok kube kubelet "$K8S_VERSION" && ok kube kube-apiserver "$K8S_VERSION"; then
  log "kubernetes $K8S_VERSION: cached"
else
  src=$DEN_K8S_DIR/src/kube; mkdir -p "$src"
  {
    echo "module den.local/k8s-build"
    echo
    grep -E '^go [0-9]' "$gomod"
    # godebug: a single line or a block, copied as is
    awk '/^godebug \(/{b=1} b{print} b&&/^\)/{b=0; next} /^godebug [^(]/{print}' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    awk -v v="$staging" '$2=="=>" && $3 ~ /^\.\/staging\// {printf "\t%s => %s %s\n", $1, $1, v}' "$gomod"
    echo ")"
  } >"$src/go.mod"
  nrep=$(grep -c '=> k8s.io/' "$src/go.mod")
  (( nrep > 20 )) || die "only $nrep staging replaces generated from $gomod; format changed?"
  { echo "//go:build tools"; echo; echo "package tools"; echo; echo "import ("
    for c in "${kube_cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done; echo ")"; } >"$src/tools.go"
  log "kubernetes $K8S_VERSION: wrapper module with $nrep staging replaces, etcd pin $ETCD_VERSION"
  cd "$src"
  [[ -f go.sum ]] || run kube-tidy "$GO" mod tidy
  t=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info")
  maj=${K8S_VERSION#v}; maj=${maj%%.*}; min=${K8S_VERSION#v*.}; min=${min%%.*}
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$maj -X $p.gitMinor=$min -X $p.gitTreeState=clean -X $p.buildDate=$t"
  done
  pkgs=(); for c in "${kube_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  run kube-build "${NICE[@]}" "$GO" build -trimpath -ldflags "$ld" -o "$DEN_K8S_DIR/src/kube-out/" "${pkgs[@]}"
  for c in "${kube_cmds[@]}"; do mv -f "$DEN_K8S_DIR/src/kube-out/$c" "$DEN_K8S_BIN/$c"; done
  stamp kube "$K8S_VERSION"
fi

if ok etcd etcd "$ETCD_VERSION"; then
  log "etcd $ETCD_VERSION: cached"
else
  src=$DEN_K8S_DIR/src/etcd; mkdir -p "$src"; cd "$src"
  printf 'module den.local/etcd-build\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  [[ -f go.sum ]] || run etcd-tidy "$GO" mod tidy
  run etcd-build "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$DEN_K8S_BIN/etcd" go.etcd.io/etcd/server/v3
  stamp etcd "$ETCD_VERSION"
fi

# CoreDNS with only the plugins the test cluster uses (no cloud back ends, no "forward"):
# a generated main package in a wrapper module. Builds in about 2/3 of the time of the full
# binary; the directive order is taken from upstream's plugin.cfg.
COREDNS_PLUGINS="root metadata cancel timeouts reload bind debug ready health prometheus errors log any chaos
  loadbalance rewrite acl cache header minimal template transfer hosts k8s_external kubernetes loop whoami"
coredns_key="$COREDNS_VERSION+$(echo $COREDNS_PLUGINS | cksum | cut -d' ' -f1)"
if ok coredns coredns "$coredns_key"; then
  log "coredns $COREDNS_VERSION: cached"
else
  src=$DEN_K8S_DIR/src/coredns; mkdir -p "$src"; cd "$src"
  cdir=$("$GO" mod download -json "github.com/coredns/coredns@$COREDNS_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -f $cdir/plugin.cfg ]] || die "no plugin.cfg in github.com/coredns/coredns@$COREDNS_VERSION"
  sel=$(grep -vE '^[[:space:]]*(#|$)' "$cdir/plugin.cfg" | awk -F: -v w="$COREDNS_PLUGINS" \
    'BEGIN{n=split(w,a,/[ \n]+/); for(i=1;i<=n;i++) ok[a[i]]=1} ok[$1]{print $1":"$2}')
  {
    printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/core/dnsserver"\n\t"github.com/coredns/coredns/coremain"\n\n'
    for l in $sel; do p=${l#*:}; [[ $p == */* ]] || p=github.com/coredns/coredns/plugin/$p; printf '\t_ "%s"\n' "$p"; done
    printf ')\n\n// Generated by den test/cluster/build.sh: the plugins of the test cluster, in plugin.cfg order.\n'
    printf 'func init() {\n\tdnsserver.Directives = []string{\n'
    for l in $sel; do printf '\t\t"%s",\n' "${l%%:*}"; done
    printf '\t}\n}\n\nfunc main() { coremain.Run() }\n'
  } >main.go
  printf 'module den.local/coredns-build\n\n%s\n\nrequire github.com/coredns/coredns %s\n' \
    "$(grep -E '^go [0-9]' "$cdir/go.mod")" "$COREDNS_VERSION" >go.mod
  rm -f go.sum; run coredns-tidy "$GO" mod tidy
  run coredns-build "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$DEN_K8S_BIN/coredns" .
  stamp coredns "$coredns_key"
fi

# local-path-provisioner: built in a copy of the Kubernetes wrapper module, so it links the
# same k8s.io/* v0.<minor> packages the cluster binaries were built with and reuses their
# compiled packages (30 s instead of 8 min; its go.mod asks for older versions, and adding it
# changes no version of the cluster's dependencies, only adds modules).
lpp_key="$LPP_VERSION+$K8S_VERSION"
if ok lpp local-path-provisioner "$lpp_key"; then
  log "local-path-provisioner $LPP_VERSION: cached"
else
  src=$DEN_K8S_DIR/src/lpp; rm -rf "$src"; mkdir -p "$src"; cd "$src"
  cp "$DEN_K8S_DIR/src/kube/go.mod" "$DEN_K8S_DIR/src/kube/go.sum" .
  sed -i 's|^module .*|module den.local/lpp-build|' go.mod
  printf '\nrequire github.com/rancher/local-path-provisioner %s\n' "$LPP_VERSION" >>go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/rancher/local-path-provisioner"\n' >tools.go
  run lpp-tidy "$GO" mod tidy
  run lpp-build "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$DEN_K8S_BIN/local-path-provisioner" github.com/rancher/local-path-provisioner
  stamp lpp "$lpp_key"
fi

# kube-network-policies (sigs.k8s.io, what kind uses) enforces NetworkPolicy. Built from the
# module proxy's v0.8.0 source with two small patches applied here, checked to apply:
#  - cmd/main.go reads $KUBECONFIG (clientcmd) instead of only the in-cluster service account,
#    so it runs as a host process like the rest of the cluster (unset: in-cluster, as upstream);
#  - it sends packets to user space with the xtables NFQUEUE target through nft_compat instead
#    of the nftables "queue" expression, which this machine's kernel lacks (CONFIG_NFT_QUEUE is
#    not set, CONFIG_NETFILTER_XT_TARGET_NFQUEUE is). Same queue number, same bypass flag.
# Built like local-path-provisioner, in a copy of the Kubernetes wrapper module.
knp_key="$KNP_VERSION+$K8S_VERSION+patch2"
if ok knp kube-network-policies "$knp_key"; then
  log "kube-network-policies $KNP_VERSION: cached"
else
  src=$DEN_K8S_DIR/src/knp; rm -rf "$src"; mkdir -p "$src"; cd "$src"
  step=knp-download
  kdir=$("$GO" mod download -json "sigs.k8s.io/kube-network-policies@$KNP_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  step=""
  [[ -f $kdir/cmd/main.go ]] || die "no cmd/main.go in sigs.k8s.io/kube-network-policies@$KNP_VERSION"
  cp -r "$kdir" upstream; chmod -R u+w upstream
  m=upstream/cmd/main.go
  sed -i -e 's|config, err := rest.InClusterConfig()|config, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))|' \
    -e 's|"k8s.io/client-go/rest"|"k8s.io/client-go/tools/clientcmd"|' "$m"
  [[ $(grep -c 'clientcmd' "$m") == 2 ]] || die "the kubeconfig patch no longer applies to $m (upstream changed)"
  sed -i -e 's|queue := &expr.Queue{Num: uint16(c.config.QueueID)}|queue := denNFQueue(uint16(c.config.QueueID), false)|' \
    -e 's|queue.Flag = expr.QueueFlagBypass|queue = denNFQueue(uint16(c.config.QueueID), true)|' \
    -e 's|&expr.Queue{Num: uint16(n.nfQueueID), Flag: expr.QueueFlagBypass}|denNFQueue(uint16(n.nfQueueID), true)|' \
    upstream/pkg/networkpolicy/*.go
  ! grep -q 'expr\.Queue' upstream/pkg/networkpolicy/*.go || die "the NFQUEUE patch no longer applies to kube-network-policies $KNP_VERSION (upstream changed)"
  cat >upstream/pkg/networkpolicy/den_nfqueue.go <<'EOF'
package networkpolicy

// Added by den test/cluster/build.sh: the xtables NFQUEUE target (revision 3) through
// nft_compat, for kernels without the nftables "queue" expression.

import (
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

func denNFQueue(num uint16, bypass bool) *expr.Target {
	var flags uint16 // NFQ_FLAG_BYPASS = 1
	if bypass {
		flags = 1
	}
	// struct xt_NFQ_info_v3 { __u16 queuenum; __u16 queues_total; __u16 flags; }
	info := xt.Unknown(append(append(binaryutil.NativeEndian.PutUint16(num),
		binaryutil.NativeEndian.PutUint16(1)...), binaryutil.NativeEndian.PutUint16(flags)...))
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}
EOF
  cp "$DEN_K8S_DIR/src/kube/go.mod" "$DEN_K8S_DIR/src/kube/go.sum" .
  sed -i 's|^module .*|module den.local/knp-build|' go.mod
  printf '\nrequire sigs.k8s.io/kube-network-policies %s\n\nreplace sigs.k8s.io/kube-network-policies => ./upstream\n' "$KNP_VERSION" >>go.mod
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "sigs.k8s.io/kube-network-policies/cmd"\n\t_ "k8s.io/kubernetes/cmd/kube-proxy"\n)\n' >tools.go
  run knp-tidy "$GO" mod tidy
  run knp-build "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$DEN_K8S_BIN/kube-network-policies" sigs.k8s.io/kube-network-policies/cmd
  stamp knp "$knp_key"
fi

printf 'k8s=%s etcd=%s coredns=%s local-path-provisioner=%s kube-network-policies=%s go=%s\n' \
  "$K8S_VERSION" "$ETCD_VERSION" "$COREDNS_VERSION" "$LPP_VERSION" "$KNP_VERSION" "$gover" >"$DEN_K8S_BIN/.complete"
log "all binaries in $DEN_K8S_BIN"
echo "$DEN_K8S_BIN"
