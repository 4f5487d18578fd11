#!/usr/bin/env bash
# The second command of the README: installs what the tests need (Redis, Apache Kafka, a
# Kubernetes control plane and Helm, Python's confluent-kafka, Chromium and playwright-core,
# cargo-fuzz), starts the services on 127.0.0.1, and runs every test. `.ci/run` calls exactly
# this. A missing service is a failure. docs/testing.md describes each service.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh
#
# Steps: the control plane's one-time build starts in the background (it is the longest install);
# formatting and lints; Redis and Kafka; the control plane; the Rust tests including the ones
# that need services (`--include-ignored`); the end-to-end suite on its own control plane and test
# node (scripts/e2e-local.sh); the browser tests; a bounded fuzz run of every fuzz
# target (FUZZ_SECONDS each); the benchmark tool's smoke run. Each step prints the seconds since the start.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

step "control plane install (background; only what is missing)"
tools="${GOIM_TOOLS_DIR:-/var/tmp/goim-tools}"
mkdir -p "$tools"
bash scripts/k8s.sh install >"$tools/k8s-install.log" 2>&1 &
k8s_install=$!

step "Prometheus Operator CRDs for the chart's ServiceMonitor and PodMonitor tests (only when missing)"
bash scripts/prometheus-crds.sh install

step "build dependencies (OpenSSL headers for librdkafka's TLS; only when missing)"
if ! pkg-config --exists openssl 2>/dev/null; then
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo -n)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq libssl-dev pkg-config >/dev/null
fi

step "nftables and conntrack (kube-proxy's nftables mode, for the e2e test node; only when missing)"
if ! command -v nft >/dev/null || ! command -v conntrack >/dev/null; then
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo -n)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq nftables conntrack >/dev/null
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "kind files: shellcheck of every script, e2e/kind/cluster.yaml with kind's own types (the manifests: tests/manifests.rs)"
if ! command -v shellcheck >/dev/null; then
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || sudo_cmd=(sudo -n)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq shellcheck >/dev/null
fi
shellcheck scripts/*.sh e2e/kind/*.sh
# The Go module cache and build cache of scripts/k8s.sh; kind v0.32.0 from the Go module proxy.
(cd e2e/kind/validate && GOMODCACHE="$tools/go/mod" GOCACHE="$tools/go/cache" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go run . ../cluster.yaml)

step "the binaries without the kafka and redis features (no librdkafka, no Redis client): build and unit tests"
cargo test -p goim --lib --bins --no-default-features --locked

step "services: Redis and Apache Kafka"
bash scripts/services.sh start
# shellcheck disable=SC1090
eval "$(bash scripts/services.sh env)"
cleanup() {
    bash scripts/k8s.sh stop >/dev/null 2>&1 || true
    bash scripts/services.sh stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler, kwok)"
if ! wait "$k8s_install"; then
    cat "$tools/k8s-install.log"
    echo "the control plane install failed" >&2
    exit 1
fi
grep '^k8s:' "$tools/k8s-install.log" || echo "k8s: everything was installed already"
bash scripts/k8s.sh start
# shellcheck disable=SC1090
eval "$(bash scripts/k8s.sh env)"
bash scripts/k8s.sh status
"$GOIM_K8S_BIN/helm" version --short

step "rust tests (hermetic and service-backed)"
cargo test --workspace --locked -- --include-ignored

step "end to end on this machine (scripts/e2e-local.sh: its own control plane, the test node, the operator from its chart, the suite)"
bash scripts/e2e-local.sh

step "browser tests (headless Chromium)"
bash scripts/browser-test.sh

step "fuzz every target (packet decoder, WebSocket frames, HTTP heads, long-poll queries, auth tokens, gRPC handlers)"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash scripts/fuzz.sh

if [ -f scripts/bench-smoke.sh ]; then
    step "benchmark smoke run"
    bash scripts/bench-smoke.sh
fi

step "all tests passed"
