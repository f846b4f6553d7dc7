# Versions of den's test Kubernetes. Sourced by build.sh, up.sh and down.sh.
# Changing any of them makes build.sh build only what changed (each piece has its own stamp).
# shellcheck shell=bash
K8S_VERSION=${K8S_VERSION:-v1.34.4}
# etcd: empty = the version k8s.io/kubernetes pins in its go.mod (go.etcd.io/etcd/server/v3).
ETCD_VERSION=${ETCD_VERSION:-}
COREDNS_VERSION=${COREDNS_VERSION:-v1.14.7}
LPP_VERSION=${LPP_VERSION:-v0.0.30}           # github.com/rancher/local-path-provisioner (v0.0.37 is served but sum.golang.org has no entry for it here)
KNP_VERSION=${KNP_VERSION:-v0.8.0}               # sigs.k8s.io/kube-network-policies (NetworkPolicy), patched in build.sh
DEN_K8S_CACHE=${DEN_K8S_CACHE:-/var/cache/den-k8s}
DEN_K8S_DIR=$DEN_K8S_CACHE/$K8S_VERSION       # GOMODCACHE, GOCACHE, sources, bin/
DEN_K8S_BIN=$DEN_K8S_DIR/bin
HELM_VERSION=${HELM_VERSION:-v4.3.2}          # helm.sh/helm/v4, built by helm.sh for deploy/helm/den's tests
