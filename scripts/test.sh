#!/usr/bin/env bash
# The second command of the README: installs what the tests need (Redis, the tansu Kafka broker,
# Python's confluent-kafka, Chromium and playwright-core, cargo-fuzz), starts the services on
# 127.0.0.1, and runs every test. `.ci/run` calls exactly this. A missing service is a failure.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh
#
# Steps: formatting and lints; the Rust tests including the ones that need services
# (`--include-ignored`); the browser tests; a bounded fuzz run of the packet decoder; the
# benchmark tool's smoke run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - start ))s)"; }

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "services: Redis and the Kafka-protocol broker"
bash scripts/services.sh start
# shellcheck disable=SC1090
eval "$(bash scripts/services.sh env)"
trap 'bash scripts/services.sh stop >/dev/null 2>&1 || true' EXIT

step "rust tests (hermetic and service-backed)"
cargo test --workspace --locked -- --include-ignored

step "browser tests (headless Chromium)"
bash scripts/browser-test.sh

step "fuzz the packet decoder"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}" bash scripts/fuzz.sh

if [ -f scripts/bench-smoke.sh ]; then
    step "benchmark smoke run"
    bash scripts/bench-smoke.sh
fi

step "all tests passed"
