#!/usr/bin/env bash
# Start den's single-node test Kubernetes on this machine; last line of stdout = kubeconfig path.
#
#   bash test/cluster/up.sh            (npm run cluster:up)
#   export KUBECONFIG=$(bash test/cluster/up.sh | tail -1)
#
# Builds the binaries first if they are not cached (test/cluster/build.sh). Starts etcd, the
# control plane, a private containerd, kubelet, kube-proxy, CoreDNS and local-path-provisioner,
# all on loopback / a pod bridge with an egress guard, then checks that a pod runs, a Service
# resolves by DNS from another pod and a PVC binds. On a running, healthy cluster it only does
# the health check. On failure it saves the logs, undoes everything (down.sh) and exits non-zero.
# DEN_K8S_KEEP_ON_FAILURE=1 leaves a failed cluster in place for debugging.
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
need_root
T0=$(date +%s%N)
elapsed() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }

exec 8>/run/den-k8s.lock
flock -n 8 || { log "another up.sh/down.sh is running; waiting up to 10 min for it"; flock -w 600 8 || die "another up.sh/down.sh still holds /run/den-k8s.lock after 10 min" "wait for it to finish, or find it with: fuser -v /run/den-k8s.lock"; }

# ---------------------------------------------------------------- already running?
healthy() {
  [[ -f $STATE/up.ok ]] || return 1
  local d; for d in "${DAEMONS[@]}"; do alive "$d" || return 1; done
  [[ "$(kubectl get --raw /readyz 2>/dev/null)" == ok ]] || return 1
  kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}
if healthy; then
  log "cluster already running and healthy (health check $(elapsed)s)"
  echo "$KUBECONFIG_PATH"
  exit 0
fi
if [[ -e $STATE || -e $RUN ]] || ip link show "$BRIDGE" >/dev/null 2>&1 || iptables -t mangle -S "$EGRESS_CHAIN" >/dev/null 2>&1; then
  dead=(); for d in "${DAEMONS[@]}"; do alive "$d" || dead+=("$d"); done
  log "found a stale or unhealthy cluster from an earlier run (not running: ${dead[*]:-none}; $STATE exists)."
  log "removing it with down.sh before starting a fresh one"
  flock -u 8
  bash "$HERE/down.sh" >&2
  flock 8
fi

# ---------------------------------------------------------------- packages
declare -A PKG_FOR=(
  [containerd]=containerd [ctr]=containerd [runc]=runc [iptables]=iptables [ip6tables]=iptables
  [conntrack]=conntrack [nft]=nftables [openssl]=openssl [catatonit]=catatonit [curl]=curl
  [ip]=iproute2 [ss]=iproute2 [findmnt]=util-linux [mountpoint]=util-linux [setsid]=util-linux [flock]=util-linux
)
missing=()
for c in "${!PKG_FOR[@]}"; do command -v "$c" >/dev/null || missing+=("${PKG_FOR[$c]}"); done
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >"/tmp/den-k8s-apt.log" 2>&1; then
    apt-get update >>"/tmp/den-k8s-apt.log" 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" >>"/tmp/den-k8s-apt.log" 2>&1 ||
      die "missing Debian packages (${missing[*]}) and apt-get could not install them (log: /tmp/den-k8s-apt.log)" \
        "apt-get update && apt-get install -y ${missing[*]}   (if dpkg is locked, wait for the other apt-get to finish)"
  fi
fi

# ---------------------------------------------------------------- binaries
# build.sh checks its stamps (0.1 s when everything is built) and builds only what is missing
[[ -f $DEN_K8S_BIN/.complete ]] || log "binaries for $K8S_VERSION are not built yet: running build.sh (a cold build takes 15-25 min on 2 cores)"
bash "$HERE/build.sh" >/dev/null || die "building Kubernetes failed (see the messages above and $DEN_K8S_DIR/logs/)" \
  "fix the cause shown above, then re-run up.sh (the build resumes from its cache)"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns local-path-provisioner kube-network-policies; do
  [[ -x $DEN_K8S_BIN/$b ]] || die "$DEN_K8S_BIN/$b is missing although the build is stamped complete" "rm -f $DEN_K8S_BIN/.complete $DEN_K8S_BIN/.*.ok and re-run up.sh"
done

# ---------------------------------------------------------------- ports
for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "${FIXED_PORTS[@]}"; do
  if port_busy "$p"; then
    hint="stop that process"
    [[ $p == "$API_PORT" ]] && hint+=", or choose another API port with DEN_K8S_API_PORT=<port>"
    [[ $p == "$ETCD_PORT" || $p == "$ETCD_PEER_PORT" ]] && hint+=", or choose other etcd ports with DEN_K8S_ETCD_PORT=<port> (uses it and port+10)"
    die "TCP port $p, needed by the test cluster, is already in use by: $(port_owner "$p")" "$hint"
  fi
done

# ---------------------------------------------------------------- from here on, failure => undo
on_fail() {
  local rc=$?
  [[ $rc == 0 ]] && return
  local keep=/tmp/den-k8s-failed-$(date +%Y%m%d-%H%M%S)
  mkdir -p "$keep"; cp -r "$LOGS/." "$keep/" 2>/dev/null || true
  printf '\n[den-k8s] up.sh FAILED after %ss. Daemon logs saved in %s\n' "$(elapsed)" "$keep" >&2
  for f in "$keep"/*.log; do [[ -f $f ]] && { printf -- '--- last lines of %s\n' "$f" >&2; tail -n 5 "$f" >&2; }; done
  if [[ ${DEN_K8S_KEEP_ON_FAILURE:-} == 1 ]]; then
    printf '[den-k8s] DEN_K8S_KEEP_ON_FAILURE=1: leaving the cluster as it is; run down.sh when done\n' >&2
  else
    printf '[den-k8s] undoing everything with down.sh so that the next up.sh starts clean\n' >&2
    flock -u 8; bash "$HERE/down.sh" >&2 || true
  fi
  exit "$rc"
}
trap on_fail EXIT
fail() { die "$@"; }

mkdir -p "$STATE" "$RUN" "$PKI" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/cni/net.d" "$STATE/local-path" "$STATE/pod-logs" "$STATE/kubelet"
: >"$STATE/host.env"
record() { echo "$1" >>"$STATE/host.env"; }

# ---------------------------------------------------------------- host network + egress guard
# Order matters: the guard is in place before containerd can start any pod.
ip -4 addr show dev lo | grep -q " $NODE_IP/" || { ip addr add "$NODE_IP/32" dev lo; record "LO_ADDR=$NODE_IP/32"; }
record "IP_FORWARD=$(cat /proc/sys/net/ipv4/ip_forward)"
echo 1 >/proc/sys/net/ipv4/ip_forward
if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
  record "BR_NF=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
else
  fail "the kernel has no br_netfilter (/proc/sys/net/bridge missing): Services would not work" "modprobe br_netfilter (or use a kernel with it built in)"
fi
ext_ifs=$(ip -o route show default | awk '{for(i=1;i<=NF;i++) if($i=="dev") print $(i+1)}' | sort -u)
ipts=(iptables); ip6tables -t mangle -S >/dev/null 2>&1 && ipts+=(ip6tables)
for ipt in "${ipts[@]}"; do
  $ipt -t mangle -N "$EGRESS_CHAIN" 2>/dev/null || $ipt -t mangle -F "$EGRESS_CHAIN"
  $ipt -t mangle -A "$EGRESS_CHAIN" -i "$BRIDGE" -o "$BRIDGE" -j RETURN
  $ipt -t mangle -A "$EGRESS_CHAIN" -i "$BRIDGE" -j DROP            # pods reach nothing but each other (and the host)
  for i in $ext_ifs; do $ipt -t mangle -A "$EGRESS_CHAIN" -o "$i" -j DROP; done  # nothing is routed off the machine while ip_forward=1
  $ipt -t mangle -C FORWARD -j "$EGRESS_CHAIN" 2>/dev/null || $ipt -t mangle -I FORWARD 1 -j "$EGRESS_CHAIN"
done
record "EGRESS=1"
# containerd pins pod network namespaces under /run/netns. Make that directory a shared mount
# point now, as `ip netns` would: otherwise a later `ip netns add` (by anything on the machine)
# stacks a bind mount over it, hiding our netns mounts so down.sh could not remove them.
mkdir -p /run/netns
if ! mountpoint -q /run/netns; then
  mount --bind /run/netns /run/netns && record "NETNS_BIND=1"
fi
mount --make-shared /run/netns

# ---------------------------------------------------------------- PKI (ECDSA P-256: fast)
log "generating PKI"
cd "$PKI"
key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }
cert() { # cert NAME SUBJECT [SAN] [serverAuth|clientAuth|both]
  local name=$1 subj=$2 san=${3:-} usage=${4:-clientAuth} ext
  key "$name"
  case $usage in serverAuth) ext="extendedKeyUsage=serverAuth" ;; clientAuth) ext="extendedKeyUsage=clientAuth" ;; both) ext="extendedKeyUsage=serverAuth,clientAuth" ;; esac
  {
    echo "basicConstraints=critical,CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"; echo "$ext"
    [[ -n $san ]] && echo "subjectAltName=$san"
  } >"$name.ext"
  openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}
key ca
openssl req -x509 -new -key ca.key -subj "/CN=den-k8s-ca" -days 30 -out ca.crt \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
pids=()
cert apiserver "/CN=kube-apiserver" \
  "IP:$NODE_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" serverAuth &
pids+=($!)
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" &
pids+=($!)
cert admin "/O=system:masters/CN=den-admin" &
pids+=($!)
cert controller-manager "/CN=system:kube-controller-manager" &
pids+=($!)
cert scheduler "/CN=system:kube-scheduler" &
pids+=($!)
cert kube-proxy "/CN=system:kube-proxy" &
pids+=($!)
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" &
pids+=($!)
cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME" serverAuth &
pids+=($!)
cert kube-network-policies "/CN=system:kube-network-policies" &
pids+=($!)
{ openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null; openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null; } &
pids+=($!)
for p in "${pids[@]}"; do wait "$p" || fail "generating the PKI with openssl failed" "check that openssl works: openssl version"; done
chmod 600 ./*.key

kubeconfig() { # kubeconfig FILE CERTNAME
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: den-k8s
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 ca.crt)
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$2.crt")
    client-key-data: $(base64 -w0 "$2.key")
contexts:
- name: den-k8s
  context: {cluster: den-k8s, user: $2}
current-context: den-k8s
EOF
  chmod 600 "$1"
}
for c in controller-manager scheduler kube-proxy kubelet kube-network-policies; do kubeconfig "$STATE/$c.kubeconfig" "$c"; done
kubeconfig "$STATE/admin.kubeconfig.tmp" admin   # renamed into place once the cluster passes its checks

# ---------------------------------------------------------------- daemons
start() { # start NAME CMD...   (own session, so it outlives the calling shell)
  local name=$1; shift
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 8>&- &   # 8>&-: daemons must not hold the up/down lock
  local pid=$!
  echo "$pid $(readlink -f "$1")" >"$PIDS/$name.pid"
}
wait_for() { # wait_for SECONDS WHAT CMD...  — polls CMD, fails with the daemon log tail
  local t=$1 what=$2 i; shift 2
  for ((i = 0; i < t * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "timed out after ${t}s waiting for $what" "see the logs in $LOGS (they are copied to /tmp/den-k8s-failed-*)"
}
# A daemon just started may still be `setsid` on its way to exec'ing the binary (its /proc exe is
# setsid's, not the daemon's): on a loaded machine that takes a while, so a live process whose
# exe is not yet the daemon's is waited for (up to 10 s) before it counts as exited.
check_alive() {
  local pid i
  read -r pid _ <"$PIDS/$1.pid" 2>/dev/null || pid=
  for ((i = 0; i < 100; i++)); do
    alive "$1" && return 0
    [[ -n $pid && -d /proc/$pid ]] || break
    sleep 0.1
  done
  fail "$1 exited right after starting; last log lines:$(printf '\n'; tail -n 15 "$LOGS/$1.log")" "see $LOGS/$1.log"
}

B=$DEN_K8S_BIN
mount -t tmpfs -o size=2g,mode=700 den-k8s-etcd "$STATE/etcd"
record "ETCD_TMPFS=$STATE/etcd"
log "starting etcd"
start etcd "$B/etcd" --name den --data-dir "$STATE/etcd/data" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "den=http://127.0.0.1:$ETCD_PEER_PORT" \
  --quota-backend-bytes 1073741824 --log-level warn
wait_for 20 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

log "starting kube-apiserver"
start kube-apiserver "$B/kube-apiserver" \
  --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$API_PORT" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --service-cluster-ip-range "$SERVICE_CIDR" --service-node-port-range 30000-32767 \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --allow-privileged=true \
  --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --profiling=false --event-ttl 1h --v 1
# (its readiness is awaited after containerd and the images: they start meanwhile)

# ---------------------------------------------------------------- containerd (private instance)
cat >"$STATE/cni/net.d/10-den-k8s.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/ipam",
        "ranges": [[{ "subnet": "$POD_SUBNET", "gateway": "$POD_GW" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
log "starting containerd"
start containerd "$(command -v containerd)" --config "$STATE/containerd.toml"
wait_for 20 "containerd socket" ctr --address "$SOCK" version
check_alive containerd

# ---------------------------------------------------------------- local images, no registry
log "building and importing local images"
# Image tarballs are deterministic, so they are cached beside the binaries, keyed by what they hold.
img=$DEN_K8S_DIR/images; mkdir -p "$img"
mk_rootfs() { rm -rf "$1"; mkdir -p "$1"/{bin,etc,tmp,dev,proc,sys}; chmod 1777 "$1/tmp"; printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$1/etc/passwd"; printf 'root:x:0:\nnobody:x:65534:\n' >"$1/etc/group"; }
local_image() { # local_image NAME REF CONFIG SRC:DEST...  — build the tarball unless cached, then import it
  local ref=$2 cfg=$3 d f key=$1; shift 3
  for f in "$@"; do key+=-$(stat -L -c %s-%Y "${f%%:*}"); done   # keyed by the files it holds
  local tar=$img/$key.tar
  if [[ ! -s $tar ]]; then
    d=$(mktemp -d "$img/build.XXXXXX"); mk_rootfs "$d"
    for f in "$@"; do cp "${f%%:*}" "$d/${f#*:}"; done
    [[ -x $d/bin/busybox ]] && for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -sf busybox "$d/bin/$a"; done
    mkimage "$ref" "$d" "$cfg" "$tar.tmp" && mv "$tar.tmp" "$tar"; rm -rf "$d"
  fi
  import_tar "$tar"
}
local_image pause "$PAUSE_IMAGE" '{"Entrypoint":["/pause","-P"]}' /usr/bin/catatonit:pause
local_image busybox "$BUSYBOX_IMAGE" '{"Env":["PATH=/bin"],"Cmd":["sh"]}' /bin/busybox:bin/busybox
local_image coredns "$COREDNS_IMAGE" '{"Entrypoint":["/coredns"]}' "$B/coredns:coredns"
local_image lpp "$LPP_IMAGE" '{"Env":["PATH=/bin"],"Entrypoint":["/bin/local-path-provisioner"]}' "$B/local-path-provisioner:bin/local-path-provisioner"

wait_for 60 "kube-apiserver /readyz" bash -c '[[ "$("$0" --kubeconfig "$1" get --raw /readyz 2>/dev/null)" == ok ]]' "$B/kubectl" "$STATE/admin.kubeconfig.tmp"
check_alive kube-apiserver
KUBECONFIG_PATH=$STATE/admin.kubeconfig.tmp

log "starting kube-controller-manager and kube-scheduler"
start kube-controller-manager "$B/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" --use-service-account-credentials=true \
  --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
  --controllers '*,bootstrapsigner,tokencleaner' --v 1
start kube-scheduler "$B/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --v 1

# ---------------------------------------------------------------- kubelet
printf 'nameserver 127.0.0.1\n' >"$STATE/resolv.conf"   # pods with dnsPolicy Default: no DNS off this machine
cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
cgroupDriver: cgroupfs
containerRuntimeEndpoint: "unix://$SOCK"
clusterDomain: cluster.local
clusterDNS: ["$DNS_IP"]
resolvConf: "$STATE/resolv.conf"
failSwapOn: false
podLogsDir: "$STATE/pod-logs"
volumePluginDir: "$STATE/kubelet/volume-plugins"
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 10s
EOF
log "starting kubelet"
start kubelet "$B/kubelet" --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v 1

# ---------------------------------------------------------------- kube-proxy
cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: "$STATE/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
iptables: {localhostNodePorts: false, masqueradeAll: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
log "starting kube-proxy"
start kube-proxy "$B/kube-proxy" --config "$STATE/kube-proxy.yaml" --v 1

for d in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do check_alive "$d"; done
log "waiting for node $NODE_NAME to be Ready"
wait_for 90 "node $NODE_NAME Ready" bash -c "\"$B/kubectl\" --kubeconfig \"$KUBECONFIG_PATH\" get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# ---------------------------------------------------------------- add-ons: CoreDNS, local-path-provisioner
log "deploying CoreDNS ($DNS_IP) and local-path-provisioner"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # No "forward": names outside the cluster never leave this machine.
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      tolerations: [{operator: Exists}]
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
          failureThreshold: 5
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
---
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner-role, namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner-role}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner-bind, namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-path-provisioner-bind}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner-role}
subjects: [{kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$STATE/local-path"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
      - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
      containers:
      - name: helper-pod
        image: $BUSYBOX_IMAGE
        imagePullPolicy: Never
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: local-path-storage}
spec:
  replicas: 1
  selector: {matchLabels: {app: local-path-provisioner}}
  template:
    metadata: {labels: {app: local-path-provisioner}}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      tolerations: [{operator: Exists}]
      containers:
      - name: local-path-provisioner
        image: $LPP_IMAGE
        imagePullPolicy: Never
        command: [local-path-provisioner, start, --config, /etc/config/config.json, --helper-image, $BUSYBOX_IMAGE]
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
        volumeMounts: [{name: config-volume, mountPath: /etc/config/}]
      volumes:
      - name: config-volume
        configMap: {name: local-path-config}
---
# kube-network-policies enforces NetworkPolicy (as a host process); the verbs of its install.yaml
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "den:kube-network-policies"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "den:kube-network-policies"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "den:kube-network-policies"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-network-policies"}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF

# Kernels from 6.12 on have the conntrack fix; older ones need upstream's DNS workaround.
# Pod IPs come from the API server: our containerd has no NRI socket (v0.8.0's --disable-nri
# flag is not wired to anything; without the socket it logs that and goes on).
kv=$(uname -r); kmaj=${kv%%.*}; kmin=${kv#*.}; kmin=${kmin%%[!0-9]*}
dnsfix=true; (( kmaj > 6 || (kmaj == 6 && kmin >= 12) )) && dnsfix=false
log "starting kube-network-policies (NetworkPolicy; nftables table inet $KNP_TABLE, NFQUEUE $KNP_QUEUE)"
KUBECONFIG=$STATE/kube-network-policies.kubeconfig start kube-network-policies "$B/kube-network-policies" \
  --hostname-override "$NODE_NAME" --nfqueue-id "$KNP_QUEUE" \
  --netfilter-bug-1766-fix="$dnsfix" --metrics-bind-address "127.0.0.1:$KNP_METRICS_PORT" --v 1

# ---------------------------------------------------------------- self-check: pod, DNS + Service, PVC
log "self-check: a pod runs, a Service resolves by DNS from another pod, a PVC binds"
ns=den-k8s-selfcheck
kubectl create namespace "$ns" >/dev/null
# pods are refused until the controller-manager has made the namespace's default ServiceAccount
check_alive kube-network-policies
wait_for 30 "kube-network-policies to program its nftables table (inet $KNP_TABLE)" nft list table inet "$KNP_TABLE"
wait_for 60 "ServiceAccount $ns/default" "$B/kubectl" --kubeconfig "$KUBECONFIG_PATH" -n "$ns" get serviceaccount default
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: $ns, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo den-selfcheck-ok > /www/index.html && exec httpd -f -p 8080 -h /www']
    readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: $ns}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: $ns}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: $ns}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: $BUSYBOX_IMAGE
    imagePullPolicy: Never
    # DNS may need a few seconds more (CoreDNS starting): retry for up to 60 s
    # (busybox-static's wget -T segfaults on Debian 12: use the timeout applet instead)
    command: [sh, -c, 'for i in \$(seq 60); do timeout 3 wget -qO- http://web/ 2>/dev/null | grep -q den-selfcheck-ok && break; sleep 1; done; nslookup web.$ns.svc.cluster.local && timeout 3 wget -qO- http://web/ | grep -q den-selfcheck-ok && echo pvc-ok > /data/f && grep -q pvc-ok /data/f']
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
EOF
phase() { kubectl -n "$ns" get pod client -o jsonpath='{.status.phase}' 2>/dev/null; }
for ((i = 0; i < 450; i++)); do
  p=$(phase || true); [[ $p == Succeeded || $p == Failed ]] && break; sleep 0.2
done
if [[ $p != Succeeded ]]; then
  { kubectl get pods -A -o wide; kubectl -n "$ns" get pvc; kubectl -n "$ns" describe pod client | tail -n 20; kubectl -n "$ns" logs client --all-containers 2>&1 | tail -n 20; } >&2 || true
  fail "the self-check pod did not succeed (phase: ${p:-none}): pods, DNS, Services or storage do not work" "see the output above and $LOGS"
fi
[[ "$(kubectl -n "$ns" get pvc data -o jsonpath='{.status.phase}')" == Bound ]] || fail "the self-check PVC is not Bound" "see $LOGS/kubelet.log and kubectl -n local-path-storage logs deploy/local-path-provisioner"
kubectl delete namespace "$ns" --wait=false >/dev/null

mv "$STATE/admin.kubeconfig.tmp" "$STATE/admin.kubeconfig"
KUBECONFIG_PATH=$STATE/admin.kubeconfig
date -u +%FT%TZ >"$STATE/up.ok"
trap - EXIT
log "cluster ready in $(elapsed)s  (kubectl: $DEN_K8S_BIN/kubectl; import images: bash $HERE/import-image.sh IMAGE...)"
echo "$KUBECONFIG_PATH"
