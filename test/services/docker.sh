#!/usr/bin/env bash
# Makes a Docker engine available on this machine, for CI on a fresh clone and for development.
# Idempotent: installs Debian's docker.io if missing, starts dockerd if no engine answers, and
# waits until it does. iptables stays off so containers on bridge networks have no route out
# (machines here reach no registry, and tests must only talk to loopback and their own networks).
set -euo pipefail
log=${DEN_DOCKERD_LOG:-/tmp/dockerd.log}

if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker.sh: installing Debian's docker.io package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >&2
fi

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! engine_up; then
  if [ -S /var/run/docker.sock ] && ! pgrep -x dockerd >/dev/null 2>&1; then
    rm -f /var/run/docker.sock # stale socket from a dead engine
  fi
  if ! pgrep -x dockerd >/dev/null 2>&1; then
    echo "docker.sh: starting dockerd (log: $log)" >&2
    # setsid: the engine must outlive this script and the shell that ran it.
    setsid nohup dockerd --iptables=false >>"$log" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 150); do
    engine_up && break
    sleep 0.2
  done
fi

if ! engine_up; then
  echo "docker.sh: the Docker engine did not answer within 30 s; see $log" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
fi

# Isolation between workspaces. den names each workspace network's bridge dn-<id>; traffic
# bridged inside one such network passes, anything routed into or out of one is rejected, so a
# workspace cannot reach another workspace's services by address (dockerd --iptables=false adds
# no isolation rules of its own, and the kernel forwards between bridges when ip_forward=1).
# Traffic between a container and the host itself (den's agent endpoint, readiness checks) is
# INPUT/OUTPUT, not FORWARD, and is unaffected.
if command -v iptables >/dev/null 2>&1; then
  # REJECT, not DROP: a lookup or connect that cannot succeed fails at once instead of after
  # resolver and TCP timeouts (Docker's embedded DNS forwards unknown names from the container).
  iptables -N DEN-ISOLATION 2>/dev/null || iptables -F DEN-ISOLATION
  iptables -A DEN-ISOLATION -m physdev --physdev-is-bridged -j RETURN
  iptables -A DEN-ISOLATION -i dn-+ -j REJECT
  iptables -A DEN-ISOLATION -o dn-+ -j REJECT
  iptables -C FORWARD -j DEN-ISOLATION 2>/dev/null || iptables -I FORWARD 1 -j DEN-ISOLATION
else
  echo "docker.sh: iptables is missing, so workspaces are not isolated from each other by address" >&2
fi
docker version --format 'docker engine {{.Server.Version}} is running' >&2
