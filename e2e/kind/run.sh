#!/usr/bin/env bash
# The end-to-end suite in kind (docs/e2e.md, *kind*): a real cluster of docker containers, the
# real image, public Redis and Kafka images, the chart, then the suite binary goim-e2e-suite.
# Not run by CI (no container engine there); CI checks this script, the kind config and
# every manifest instead (scripts/test.sh, step "kind files").
#
#   e2e/kind/run.sh                   create (or reuse) the cluster, build, load, install, run
#   e2e/kind/run.sh --keep            leave the cluster and the routes when done
#   e2e/kind/run.sh --no-build        use the image already in docker (GOIM_E2E_IMAGE)
#   e2e/kind/run.sh --name NAME       the cluster's name (default goim-e2e; env GOIM_KIND_CLUSTER)
#
# Env: GOIM_E2E_IMAGE (default goim-rs:e2e, the tag e2e/kind/values.yaml names),
# GOIM_E2E_KEEP=1 (as --keep), GOIM_E2E_NO_BUILD=1 (as --no-build).
#
# Linux only for the run itself: the suite reaches Services by their ClusterIP and pods by
# their IP, so the script routes the cluster's service and pod CIDRs (pinned in cluster.yaml)
# from this host to the control-plane node's address on the docker network
# (`ip route replace`, root or sudo). Docker Desktop (macOS, Windows) runs the nodes in a VM
# whose network the host cannot route to: there the suite cannot reach the cluster.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }
die() { echo "kind: $*" >&2; exit 1; }

name="${GOIM_KIND_CLUSTER:-goim-e2e}"
image="${GOIM_E2E_IMAGE:-goim-rs:e2e}"
keep="${GOIM_E2E_KEEP:-0}"
build="$([ "${GOIM_E2E_NO_BUILD:-0}" = 1 ] && echo 0 || echo 1)"
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) keep=1 ;;
        --no-build) build=0 ;;
        --name) [ $# -ge 2 ] || die "--name needs a value"; name="$2"; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--keep] [--no-build] [--name NAME]" >&2; exit 64 ;;
    esac
    shift
done
deps_ns=goim-e2e-deps
suite_ns=goim-e2e
operator_ns=goim-system

missing=()
for tool in docker kind kubectl helm cargo ip; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} (docker, kind, kubectl, helm, cargo and iproute2's ip are needed)"
docker info >/dev/null 2>&1 || die "docker is installed but its engine does not answer (docker info)"
[ "$(uname -s)" = Linux ] || die "the host must route to the node containers: Linux only (docs/e2e.md, kind)"
sudo_cmd=()
[ "$(id -u)" = 0 ] || sudo_cmd=(sudo)

# The CIDRs, read from the config so they are written in one place.
pod_cidr="$(sed -nE 's/^ *podSubnet: *"?([0-9./]+)"?.*/\1/p' "$here/cluster.yaml")"
svc_cidr="$(sed -nE 's/^ *serviceSubnet: *"?([0-9./]+)"?.*/\1/p' "$here/cluster.yaml")"
{ [ -n "$pod_cidr" ] && [ -n "$svc_cidr" ]; } || die "cluster.yaml must set networking.podSubnet and serviceSubnet"

kubeconfig="$(mktemp -t "kind-$name.XXXXXX.kubeconfig")"
export KUBECONFIG="$kubeconfig"
routed=0
cleanup() {
    local rc=$?
    if [ "$keep" = 1 ]; then
        echo "kind: kept cluster $name (kind delete cluster --name $name; routes to $svc_cidr and $pod_cidr stay)"
        echo "kind: KUBECONFIG=$kubeconfig"
    else
        if [ "$routed" = 1 ]; then
            "${sudo_cmd[@]}" ip route del "$svc_cidr" 2>/dev/null || true
            "${sudo_cmd[@]}" ip route del "$pod_cidr" 2>/dev/null || true
        fi
        kind delete cluster --name "$name" >/dev/null 2>&1 || true
        rm -f "$kubeconfig"
    fi
    exit "$rc"
}
trap cleanup EXIT

step "cluster $name (e2e/kind/cluster.yaml)"
if kind get clusters 2>/dev/null | grep -qx "$name"; then
    echo "reusing the existing cluster $name"
else
    kind create cluster --name "$name" --config "$here/cluster.yaml" --wait 5m
fi
kind export kubeconfig --name "$name" --kubeconfig "$kubeconfig"
kubectl get nodes -o wide

step "image $image (images/Dockerfile)"
cd "$root"
if [ "$build" = 1 ]; then
    docker build -f images/Dockerfile -t "$image" \
        --build-arg GIT_REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" .
else
    docker image inspect "$image" >/dev/null || die "no image $image in docker: run without --no-build"
fi
kind load docker-image "$image" --name "$name"

step "the suite binary (cargo build --release -p goim-e2e --bin goim-e2e-suite)"
cargo build --release --locked -p goim-e2e --bin goim-e2e-suite
target="$(cargo metadata --format-version 1 --no-deps | sed -nE 's/.*"target_directory":"([^"]+)".*/\1/p')"
suite="$target/release/goim-e2e-suite"
[ -x "$suite" ] || die "no $suite after the build"

step "routes from this host: $svc_cidr and $pod_cidr via the control-plane node"
node_ip="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$name-control-plane" | awk '{print $1}')"
[ -n "$node_ip" ] || die "no address for the node container $name-control-plane"
echo "ip route replace $svc_cidr via $node_ip; ip route replace $pod_cidr via $node_ip (needs root or sudo)"
routed=1
"${sudo_cmd[@]}" ip route replace "$svc_cidr" via "$node_ip"
"${sudo_cmd[@]}" ip route replace "$pod_cidr" via "$node_ip"

step "Redis and Kafka (KRaft) in $deps_ns"
kubectl apply -f "$here/redis.yaml" -f "$here/kafka.yaml"
kubectl -n "$deps_ns" rollout status deployment/redis --timeout=3m
kubectl -n "$deps_ns" rollout status deployment/kafka --timeout=5m

step "the operator chart (charts/goim-rs-operator, CRD included)"
tag="${image##*:}"
helm upgrade --install goim-operator charts/goim-rs-operator \
    --namespace "$operator_ns" --create-namespace \
    -f "$here/values.yaml" --set image.repository="${image%:*}" --set image.tag="$tag" \
    --wait --timeout 5m
kubectl wait --for=condition=Established crd/pushclusters.goim-rs.io --timeout=1m

step "the suite"
"$suite" --namespace "$suite_ns" --example examples/pushcluster-distributed.yaml \
    --redis-url "redis://redis.$deps_ns.svc:6379/0" --kafka-brokers "kafka.$deps_ns.svc:9092" \
    --image "$image"

step "the kind suite passed"
