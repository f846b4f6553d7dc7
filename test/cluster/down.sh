#!/usr/bin/env bash
# Stop den's test Kubernetes and remove everything up.sh created: processes (by PID), pods and
# their network namespaces, the pod bridge, iptables chains, mounts, cgroups, the address on lo,
# sysctls it changed, and its state directories. Idempotent: safe to run when nothing is up.
#
#   bash test/cluster/down.sh          (npm run cluster:down)
set -uo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
need_root
T0=$(date +%s)
step() { [[ -n ${DEN_K8S_VERBOSE:-} ]] && log "down: $*"; return 0; }
exec 8>/run/den-k8s.lock
flock -n 8 || { log "another up.sh/down.sh is running; waiting up to 10 min for it"; flock -w 600 8 || die "another up.sh/down.sh still holds /run/den-k8s.lock after 10 min" "wait for it to finish, or find it with: fuser -v /run/den-k8s.lock"; }

if [[ ! -e $STATE && ! -e $RUN ]] && ! ip link show "$BRIDGE" >/dev/null 2>&1 &&
  ! iptables -t mangle -S "$EGRESS_CHAIN" >/dev/null 2>&1; then
  log "no test cluster here; nothing to do"
  exit 0
fi
log "stopping the test cluster"

# --- 1. kubelet first, so it does not restart what we stop
step "1. kubelet first"
stop_daemon kubelet 10

# --- 2. pods: remember their network namespaces, then kill them through containerd
step "2. pods"
netns=()
# pod network namespaces: those whose veth is on our bridge (works even if containerd is dead) ...
for n in $(ip -o link show master "$BRIDGE" 2>/dev/null | grep -o 'link-netns [^ ]*' | awk '{print $2}'); do
  netns+=("/run/netns/$n")
done
# ... and those containerd knows (below)
if alive containerd; then
  mapfile -t ids < <(ctr_ containers ls -q 2>/dev/null)
  for id in "${ids[@]}"; do
    n=$(ctr_ containers info "$id" 2>/dev/null | grep -o '/var/run/netns/cni-[0-9a-f-]*' | head -1)
    [[ -n $n ]] && netns+=("$n")
    rm -f /var/lib/cni/results/"$CNI_NET-$id"-* /var/lib/cni/results/cni-loopback-"$id"-* 2>/dev/null
  done
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 0.5
  for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
fi
stop_daemon containerd 10

# --- 3. whatever survived: processes in kubelet's cgroups, and shims of our containerd (by PID)
step "3. whatever survived"
kill_pids() { local p; for p in "$@"; do [[ $p =~ ^[0-9]+$ && $p != $$ ]] && kill -KILL "$p" 2>/dev/null; done; return 0; }
for procs in /sys/fs/cgroup/*/kubepods/cgroup.procs; do
  [[ -e $procs ]] || continue
  kill_pids $(find "$(dirname "$procs")" -name cgroup.procs -exec cat {} + 2>/dev/null)
done
kill_pids $(pgrep -f -- "containerd-shim.* -address $SOCK( |\$)")   # the shims of *our* containerd only

# --- 4. the other daemons, in reverse start order
step "4. the other daemons"
# (kube-router: the NetworkPolicy daemon of clusters started before kube-network-policies)
stop_daemons 3 kube-network-policies kube-router kube-proxy kube-scheduler kube-controller-manager kube-apiserver   # state is thrown away: no need to be gentle
stop_daemons 3 etcd

# --- 5. iptables: kube-proxy's rules, then any KUBE-*/CNI-* chains (kubelet, portmap) and our guard
step "5. iptables"
if [[ -x $DEN_K8S_BIN/kube-proxy ]]; then "$DEN_K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
clean_chains() { # clean_chains iptables|ip6tables TABLE REGEX
  local ipt=$1 table=$2 re=$3 rule chain
  # rules in any chain that jump to a matching chain
  $ipt -t "$table" -S 2>/dev/null | grep -E -- "^-A .* -j ($re)( |$)" | while read -r rule; do
    eval "$ipt -t $table ${rule/#-A/-D}" 2>/dev/null || true
  done
  for chain in $($ipt -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E "^($re)$"); do
    $ipt -t "$table" -F "$chain" 2>/dev/null || true
  done
  for chain in $($ipt -t "$table" -S 2>/dev/null | awk '$1=="-N"{print $2}' | grep -E "^($re)$"); do
    $ipt -t "$table" -X "$chain" 2>/dev/null || true
  done
}
for ipt in iptables ip6tables; do
  for t in filter nat mangle; do clean_chains "$ipt" "$t" 'KUBE-[A-Z0-9-]+|CNI-[A-Za-z0-9-]+'; done
  clean_chains "$ipt" mangle "$EGRESS_CHAIN"
done

# kube-network-policies' nftables table: it removes it only on SIGINT, and without its process
# the table's NFQUEUE rule would drop the packets of every pod a NetworkPolicy selects
if command -v nft >/dev/null; then nft delete table inet "$KNP_TABLE" 2>/dev/null || true; fi
# kube-router's ipsets, left by clusters started before kube-network-policies
if command -v ipset >/dev/null; then
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)'); do ipset destroy "$set" 2>/dev/null || true; done
fi

# --- 6. mounts under our directories (pod volumes, rootfs, shm, etcd tmpfs), deepest first
step "6. mounts under our directories (pod volume"
umount_all() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)(/|$)" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}
umount_all

# --- 7. network: pod namespaces (their veths go with them), bridge, address on lo, sysctls
step "7. network"
mapfile -t netns < <(printf '%s\n' "${netns[@]}" | sed 's#^/var/run/#/run/#' | sort -u | grep .)
for n in "${netns[@]}"; do
  umount "$n" 2>/dev/null || umount -l "$n" 2>/dev/null
  rm -f "$n" 2>/dev/null || log "could not remove pod network namespace $n (hidden under another mount of /run/netns?)"
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null
# containerd's loopback results whose network namespace is gone (ours, also from a killed run)
for f in /var/lib/cni/results/cni-loopback-*; do
  [[ -f $f ]] || continue
  ns_path=$(grep -o '"sandbox":"[^"]*"' "$f" | head -1 | cut -d'"' -f4)
  [[ -n $ns_path && ! -e $ns_path ]] && rm -f "$f"
done
rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null   # only if empty
declare -A H=()
if [[ -f $STATE/host.env ]]; then while IFS='=' read -r k v; do H[$k]=$v; done <"$STATE/host.env"; fi
if [[ -n ${H[LO_ADDR]:-} ]] || ip -4 addr show dev lo | grep -q " $NODE_IP/32"; then ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true; fi
# /run/netns: undo our bind mount only if no namespace is left in it (others may use it too)
if [[ -n ${H[NETNS_BIND]:-} ]] && mountpoint -q /run/netns && [[ -z $(findmnt -rn -o TARGET | grep '^/run/netns/') ]]; then
  umount /run/netns 2>/dev/null || true
fi
[[ -n ${H[IP_FORWARD]:-} ]] && echo "${H[IP_FORWARD]}" >/proc/sys/net/ipv4/ip_forward
[[ -n ${H[BR_NF]:-} && -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && echo "${H[BR_NF]}" >/proc/sys/net/bridge/bridge-nf-call-iptables

# --- 8. kubelet's cgroups (empty now), deepest first
step "8. kubelet's cgroups (empty now)"
for root in /sys/fs/cgroup/*/kubepods; do
  [[ -d $root ]] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null
done
for root in /sys/fs/cgroup/*/kubepods; do [[ -d $root ]] && log "cgroup $root could not be removed (processes left in it?)"; done

# --- 9. state
step "9. state"
umount_all
left=$(findmnt -rn -o TARGET | grep -E "^($STATE|$RUN)(/|$)")
if [[ -n $left ]]; then
  # never rm -rf through a mount (a pod's hostPath could point anywhere)
  log "ERROR: still mounted, so $STATE and $RUN are kept: $left"
  log "Fix: umount those paths (see 'findmnt'), then run down.sh again"
  exit 1
fi
rm -rf --one-file-system "$STATE" "$RUN"
log "test cluster removed ($(($(date +%s) - T0))s)"
exit 0
