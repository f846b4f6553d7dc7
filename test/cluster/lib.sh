# Shared settings and helpers for up.sh, down.sh and import-image.sh. Sourced, not run.
# shellcheck shell=bash
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.sh
source "$HERE/versions.sh"

# Everything the cluster creates on the host is under these two directories, plus the few
# host changes recorded in $STATE/host.env (address on lo, iptables chains, sysctls).
STATE=${DEN_K8S_STATE:-/var/lib/den-k8s}
RUN=${DEN_K8S_RUN:-/run/den-k8s}
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$RUN/pids
SOCK=$RUN/containerd/containerd.sock
KUBECONFIG_PATH=$STATE/admin.kubeconfig

NODE_NAME=den-node
NODE_IP=10.200.0.1              # on lo; reachable from pods through the bridge gateway
POD_CIDR=10.244.0.0/16
POD_SUBNET=10.244.0.0/24        # this node's pods (static CNI config)
POD_GW=10.244.0.1
SERVICE_CIDR=10.96.0.0/12
API_SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
BRIDGE=den-cni0
CNI_NET=den-k8s
EGRESS_CHAIN=DEN-K8S-EGRESS

API_PORT=${DEN_K8S_API_PORT:-6443}
ETCD_PORT=${DEN_K8S_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_PORT + 10))
# kubelet 10250 (node IP) + 10248 (healthz), controller-manager 10257, scheduler 10259,
# kube-proxy 10249 (metrics) + 10256 (healthz)
# kube-network-policies metrics 10262 (on 127.0.0.1)
KNP_METRICS_PORT=10262
FIXED_PORTS=(10250 10248 10257 10259 10249 10256 $KNP_METRICS_PORT)
# kube-network-policies: its nftables table (inet family) and the NFQUEUE number it reads
KNP_TABLE=kube-network-policies
KNP_QUEUE=100

# Local images (built by up.sh without any registry). Non-"latest" tags: never pulled.
PAUSE_IMAGE=den.local/pause:3.10
BUSYBOX_IMAGE=den.local/busybox:1.35
COREDNS_IMAGE=den.local/coredns:$COREDNS_VERSION
LPP_IMAGE=den.local/local-path-provisioner:$LPP_VERSION

# daemons, in start order (down.sh stops them in reverse)
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy kube-network-policies)

log() { printf '[den-k8s %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  printf '\n[den-k8s] ERROR: %s\n' "$1" >&2
  [[ -n ${2:-} ]] && printf '[den-k8s] Fix: %s\n' "$2" >&2
  exit 1
}

need_root() { [[ $(id -u) == 0 ]] || die "this script must run as root (it configures containerd, iptables and mounts)" "run it as root, e.g. sudo bash $0"; }

kubectl() { "$DEN_K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr_() { ctr --address "$SOCK" -n k8s.io "$@"; }

# pid files hold "PID EXE" so a recycled PID is never mistaken for ours
pid_of() {
  local f=$PIDS/$1.pid pid exe
  [[ -f $f ]] || return 1
  read -r pid exe <"$f" || return 1
  [[ -n $pid && -d /proc/$pid && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || return 1
  echo "$pid"
}
alive() { pid_of "$1" >/dev/null; }

# stop NAME [timeout-seconds]: TERM, wait, KILL
stop_daemon() {
  local name=$1 t=${2:-15} pid i
  pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < t * 10; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
  if [[ -d /proc/$pid ]]; then log "$name (pid $pid) did not stop in ${t}s; killing it"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
  rm -f "$PIDS/$name.pid"
}

# stop_daemons TIMEOUT NAME...: TERM all at once, wait up to TIMEOUT s for all, KILL the rest
stop_daemons() {
  local t=$1 name pid i left; shift
  local -A pids=()
  for name in "$@"; do
    if pid=$(pid_of "$name"); then pids[$name]=$pid; kill -TERM "$pid" 2>/dev/null || true; fi
    rm -f "$PIDS/$name.pid"
  done
  for ((i = 0; i < t * 10; i++)); do
    left=0; for name in "${!pids[@]}"; do [[ -d /proc/${pids[$name]} ]] && left=1; done
    ((left)) || return 0
    sleep 0.1
  done
  for name in "${!pids[@]}"; do
    if [[ -d /proc/${pids[$name]} ]]; then log "$name (pid ${pids[$name]}) did not stop in ${t}s; killing it"; kill -KILL "${pids[$name]}" 2>/dev/null || true; fi
  done
  sleep 0.2
}

# processes listening on TCP port $1, as "name(pid)"
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:((.*))' | sed -E 's/users:\(\("([^"]*)",pid=([0-9]+).*/\1 (pid \2)/' | sort -u | paste -sd, -; }
port_busy() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# write a docker-archive (docker save format) tarball by hand: mkimage REF ROOTFS_DIR CONFIG_JSON OUT.tar
# CONFIG_JSON is the image's "config" object, e.g. {"Entrypoint":["/pause"]}. Reproducible: same input, same digest.
mkimage() {
  local ref=$1 rootfs=$2 cfg=$3 out=$4 tmp diff csum
  tmp=$(mktemp -d)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$tmp/layer.tar" .
  diff=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
  mkdir "$tmp/$diff" && mv "$tmp/layer.tar" "$tmp/$diff/layer.tar"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"den test/cluster"}]}' \
    "$cfg" "$diff" >"$tmp/config.json"
  csum=$(sha256sum "$tmp/config.json" | cut -d' ' -f1)
  mv "$tmp/config.json" "$tmp/$csum.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$csum" "$ref" "$diff" >"$tmp/manifest.json"
  tar --mtime=@0 --owner=0 --group=0 -C "$tmp" -cf "$out" manifest.json "$csum.json" "$diff"
  rm -rf "$tmp"
}

# import a docker-archive or OCI tarball (file or "-" for stdin) into the cluster's containerd
import_tar() { ctr_ images import "$1" >/dev/null; }
