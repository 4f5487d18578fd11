#!/usr/bin/env bash
# Runs the browser tests: web/goim.js unit tests in Node, and the demo page in headless Chromium
# against the embedded server and against goim-logic, goim-job and goim-comet (built here unless
# GOIM_BIN is set; the tiers are taken from GOIM_BIN's directory, or GOIM_BIN_DIR). The
# distributed tests start Redis and Kafka with scripts/services.sh unless GOIM_TEST_REDIS_URL and
# GOIM_TEST_KAFKA_BROKERS are set.
# Screenshots and server logs land in tests/browser/out/.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

bash scripts/browser-setup.sh || { echo "browser tests: setup failed"; exit 1; }

# Build before the tests start so their timeouts do not include compiling.
if [ -z "${GOIM_BIN:-}" ]; then
    cargo build --quiet --bin goim --bin goim-logic --bin goim-job --bin goim-comet \
        || { echo "browser tests: cargo build failed"; exit 1; }
fi

log="$(mktemp)"
node --test --test-reporter=spec --test-reporter-destination=stdout tests/browser/ 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The spec reporter ends with "ℹ pass N" / "ℹ fail N" lines.
pass=$(grep -Eo '^ℹ pass [0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)
fail=$(grep -Eo '^ℹ fail [0-9]+' "$log" | grep -Eo '[0-9]+' | tail -1)
rm -f "$log"
echo "browser: ${pass:-0} passed, ${fail:-0} failed"
if [ "$status" -ne 0 ] || [ "${fail:-0}" -ne 0 ] || [ "${pass:-0}" -eq 0 ]; then
    exit 1
fi
