#!/usr/bin/env bash
# The benchmark tool's smoke run, for CI: every scenario (idle, room, rooms, users, storm)
# against goim-rs over WebSocket, TCP and long-polling, at a few hundred connections for about
# a second per step. Fails when any connection, push or delivery fails. Needs no peers.
#
#   scripts/bench-smoke.sh            # results in <target dir>/bench-smoke/
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# Debug builds: CI's test run has built most of both already.
cargo build --locked -p goim --bin goim -p goim-bench --bin goim-bench
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
start=$(date +%s)
"$target/debug/goim-bench" smoke --goim-bin "$target/debug/goim" --out "${BENCH_SMOKE_OUT:-$target/bench-smoke}"
echo "benchmark smoke run: $(( $(date +%s) - start ))s"
