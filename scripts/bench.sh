#!/usr/bin/env bash
# The full benchmark, one command: installs the peers (nginx + nchan, socket.io), builds
# goim-rs and the load generator in release mode, runs every scenario against goim-rs and the
# peers side by side, and writes bench/out/{results.json,report.md,delivered.png,p99.png,
# memory.png}. Takes about half an hour; run it on a quiet machine.
#
#   scripts/bench.sh                        # everything, default sizes (10,000 and 50,000 idle)
#   scripts/bench.sh --scenarios idle,room  # any `goim-bench run` option passes through
#   BENCH_PUBLISH=1 scripts/bench.sh        # then copy the report and plots to docs/bench/
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
socketio_dir="$(bash scripts/bench-peers.sh | tail -n 1)"
# redis-server and Apache Kafka for the goim-kafka target, which starts its own on loopback
# ports (Kafka from $GOIM_TEST_KAFKA_HOME, else where services.sh installs it).
bash scripts/services.sh install
cargo build --release --locked -p goim --bins -p goim-bench --bin goim-bench
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
"$target/release/goim-bench" run --goim-bin "$target/release/goim" --socketio-dir "$socketio_dir" \
    --out bench/out "$@"
if [ "${BENCH_PUBLISH:-0}" = 1 ]; then
    mkdir -p docs/bench
    cp bench/out/report.md bench/out/results.json docs/bench/
    cp bench/out/*.png docs/bench/
    echo "published bench/out to docs/bench/"
fi
