#!/usr/bin/env bash
# The end-to-end suite on this machine (docs/e2e.md, *local*): a control plane of its own
# (scripts/k8s.sh, with no kwok nodes), the test node goim-e2e-node running every pod as local
# processes in network namespaces with kube-proxy for Service traffic, Redis and Kafka on the
# node's bridge address (where pods reach them), the operator from its chart (CRD included),
# then the suite binary goim-e2e-suite; at the end everything is stopped by PID, whatever happened.
#
#   scripts/e2e-local.sh                     build (debug), start, run every case, stop
#   scripts/e2e-local.sh --cases ready,kill  only these cases (`ready` always runs)
#   scripts/e2e-local.sh --release           the release build instead (slower to build, faster pods)
#   scripts/e2e-local.sh --keep              leave everything running (prints how to stop it)
#
# Env: GOIM_E2E_DIR (state, default /tmp/goim-e2e-local), GOIM_E2E_POD_CIDR (default
# 10.250.0.0/24), GOIM_E2E_TIMEOUT (seconds the suite may take, default 480).
# Needs root (network namespaces, bind mounts, nftables) on Linux; installs nftables and
# conntrack from Debian's packages when missing (kube-proxy's nftables mode runs `nft`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)
step() { echo; echo "=== e2e-local: $* ($(( $(date +%s) - start ))s)"; }
die() { echo "e2e-local: $*" >&2; exit 1; }

profile=debug
keep=0
cases=""
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release ;;
        --keep) keep=1 ;;
        --cases) [ $# -ge 2 ] || die "--cases needs a value"; cases="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "usage: $0 [--release] [--keep] [--cases a,b]" >&2; exit 64 ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bind mounts, nftables)"
state="${GOIM_E2E_DIR:-/tmp/goim-e2e-local}"
pod_cidr="${GOIM_E2E_POD_CIDR:-10.250.0.0/24}"
timeout_s="${GOIM_E2E_TIMEOUT:-480}"
# The bridge's (the node's) address: the pod range's first host.
bridge_ip="$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1]).hosts()))' "$pod_cidr")"
node_name=e2e-local-0
bridge=goim-e2el0
image=goim-rs:local
operator_ns=goim-system
suite_ns=goim-e2e

if ! command -v nft >/dev/null || ! command -v conntrack >/dev/null; then
    step "nftables and conntrack (Debian's packages; kube-proxy's nftables mode)"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nftables conntrack >/dev/null \
        || { apt-get -o DPkg::Lock::Timeout=600 update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nftables conntrack >/dev/null; }
fi

mkdir -p "$state"
# A node an earlier run left (--keep, or a killed script) would share the bridge and the nft table.
if [ -s "$state/node.pid" ] && kill -0 "$(cat "$state/node.pid")" 2>/dev/null; then
    echo "e2e-local: stopping the node an earlier run left (pid $(cat "$state/node.pid"))"
    kill -TERM "$(cat "$state/node.pid")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$state/node.pid")" 2>/dev/null || break; sleep 0.5; done
fi
GOIM_SERVICES_DIR="$state/services" GOIM_SERVICES_HOST="$bridge_ip" bash scripts/services.sh stop >/dev/null 2>&1 || true
GOIM_K8S_DIR="$state/k8s" bash scripts/k8s.sh stop >/dev/null 2>&1 || true
node_pid=""
cleanup() {
    local rc=$?
    if [ "$keep" = 1 ]; then
        echo "e2e-local: kept running (state in $state). Stop with:"
        echo "  kill $node_pid; GOIM_SERVICES_DIR=$state/services bash scripts/services.sh stop; GOIM_K8S_DIR=$state/k8s bash scripts/k8s.sh stop"
        exit "$rc"
    fi
    step "stopping: the node (its pods and kube-proxy), Redis and Kafka, the control plane"
    if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$node_pid" 2>/dev/null || true
    fi
    GOIM_SERVICES_DIR="$state/services" GOIM_SERVICES_HOST="$bridge_ip" bash scripts/services.sh stop >/dev/null 2>&1 || true
    GOIM_K8S_DIR="$state/k8s" bash scripts/k8s.sh stop >/dev/null 2>&1 || true
    if [ "$rc" != 0 ]; then
        echo "e2e-local: failed (rc=$rc); the node's log: $state/node.log, pod logs: $state/node/logs" >&2
        tail -n 40 "$state/node.log" >&2 2>/dev/null || true
    fi
    echo "e2e-local: done in $(( $(date +%s) - start ))s (rc=$rc)"
    exit "$rc"
}
trap cleanup EXIT

step "build ($profile): goim-comet, goim-logic, goim-job, goim-operator, goim-e2e-node, goim-e2e-suite"
release=()
[ "$profile" = release ] && release=(--release)
cargo build --locked "${release[@]}" -p goim -p goim-operator -p goim-e2e --bins
target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/$profile"
for b in goim-comet goim-logic goim-job goim-operator goim-e2e-node goim-e2e-suite; do
    [ -x "$bin/$b" ] || die "no $bin/$b after the build"
done

step "control plane (scripts/k8s.sh, state in $state/k8s, no kwok nodes)"
GOIM_K8S_DIR="$state/k8s" GOIM_K8S_NODES=0 bash scripts/k8s.sh start
# shellcheck disable=SC1090
eval "$(GOIM_K8S_DIR="$state/k8s" bash scripts/k8s.sh env)"
kubectl() { "$GOIM_K8S_BIN/kubectl" "$@"; }
helm() { "$GOIM_K8S_BIN/helm" "$@"; }

step "the test node $node_name ($pod_cidr on $bridge, kube-proxy in nftables mode; image $image = $bin)"
rm -rf "$state/node"
"$bin/goim-e2e-node" --name "$node_name" --pod-cidr "$pod_cidr" --bridge "$bridge" \
    --state-dir "$state/node" --image "goim-rs=$bin" --kube-proxy "$GOIM_K8S_BIN/kube-proxy" \
    --delete-node-on-exit >"$state/node.log" 2>&1 &
node_pid=$!
echo "$node_pid" >"$state/node.pid"
for _ in $(seq 1 60); do
    if [ "$(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; then
        break
    fi
    kill -0 "$node_pid" 2>/dev/null || die "the node exited; see $state/node.log"
    sleep 0.5
done
kubectl get node "$node_name" -o wide

step "Redis and Kafka on $bridge_ip (the bridge address: pods reach it, nothing outside does)"
GOIM_SERVICES_DIR="$state/services" GOIM_SERVICES_HOST="$bridge_ip" bash scripts/services.sh start
# shellcheck disable=SC1090
eval "$(GOIM_SERVICES_DIR="$state/services" GOIM_SERVICES_HOST="$bridge_ip" bash scripts/services.sh env)"

step "the operator (charts/goim-rs-operator, CRD included) on the test node"
cat >"$state/values.yaml" <<EOF
# charts/goim-rs-operator values for scripts/e2e-local.sh: the test node maps the image to $bin.
replicas: 1
image:
  repository: ${image%:*}
  tag: ${image##*:}
logLevel: info,goim_operator=debug
EOF
helm upgrade --install goim-operator charts/goim-rs-operator \
    --namespace "$operator_ns" --create-namespace -f "$state/values.yaml" --wait --timeout 40s
kubectl wait --for=condition=Established crd/pushclusters.goim-rs.io --timeout=1m
kubectl -n "$operator_ns" get pods -o wide

step "the suite (goim-e2e-suite${cases:+, cases $cases}; at most ${timeout_s}s)"
suite_args=(--namespace "$suite_ns" --example examples/pushcluster-distributed.yaml
    --redis-url "$GOIM_TEST_REDIS_URL" --kafka-brokers "$GOIM_TEST_KAFKA_BROKERS" --image "$image")
[ -n "$cases" ] && suite_args+=(--cases "$cases")
set +e
timeout --kill-after=10 "$timeout_s" "$bin/goim-e2e-suite" "${suite_args[@]}" 2>&1 | tee "$state/suite.log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || die "the suite failed (rc=$rc); its output: $state/suite.log"
step "the local suite passed"
