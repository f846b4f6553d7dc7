#!/usr/bin/env bash
# Import locally built images into the test cluster's containerd (namespace k8s.io), so pods can
# use them without any registry. Use a tag other than "latest" (or imagePullPolicy: Never /
# IfNotPresent) in the pod spec, or the kubelet tries to pull.
#
#   bash test/cluster/import-image.sh den/workspace:dev [more images...]   # from Docker (docker save)
#   bash test/cluster/import-image.sh --tar image.tar [more.tar...]        # docker-archive or OCI tarball
#   docker save den/workspace:dev | bash test/cluster/import-image.sh --tar -
#   bash test/cluster/import-image.sh --rootfs DIR NAME:TAG ['{"Entrypoint":["/bin/sh"]}']
#                                         # a plain directory tree as a one-layer image
#   bash test/cluster/import-image.sh --list                              # what the cluster has
set -euo pipefail
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
need_root
[[ -S $SOCK ]] || die "the test cluster's containerd is not running ($SOCK missing)" "start the cluster first: bash test/cluster/up.sh"
(($#)) || die "no image given" "bash $0 IMAGE... | --tar FILE... | --rootfs DIR NAME:TAG | --list"

case $1 in
--list)
  ctr_ images ls -q | grep -v '^sha256:'
  ;;
--tar)
  shift
  for f in "$@"; do
    [[ $f == - || -f $f ]] || die "no such file: $f"
    import_tar "$f"
    log "imported $f"
  done
  ;;
--rootfs)
  [[ $# -ge 3 && -d $2 ]] || die "usage: $0 --rootfs DIR NAME:TAG [CONFIG_JSON]"
  t=$(mktemp)
  mkimage "$3" "$2" "${4:-{\}}" "$t"
  import_tar "$t"; rm -f "$t"
  log "imported $2 as $3"
  ;;
*)
  command -v docker >/dev/null || die "docker is not installed, so images cannot be read from it" "apt-get install -y docker.io, or pass a tarball with --tar"
  docker info >/dev/null 2>&1 || die "the Docker engine is not running" "start it (dockerd --iptables=false &), or pass a tarball with --tar"
  for i in "$@"; do
    docker image inspect "$i" >/dev/null 2>&1 || die "Docker has no image $i" "build it first (docker build -t $i ...)"
    docker save "$i" | import_tar -
    log "imported $i"
  done
  ;;
esac
