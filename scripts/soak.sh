#!/usr/bin/env bash
# The soak (outside CI): holds many connections against the distributed mode (goim-logic with
# the Redis store and the Kafka queue, two goim-comet, one goim-job) under mixed traffic for a
# long time, and prints lost numbered pushes, unexpected disconnects and each server's RSS over
# time; writes soak.csv, summary.md and PNG plots.
#
#   scripts/soak.sh [--connections N] [--duration 1h] [--out DIR] [-- more goim-bench soak flags]
#
# Defaults: 10000 connections, 1h, /var/tmp/goim-rs-soak. Redis and Kafka are started with
# scripts/services.sh in a state directory of the soak's own ($GOIM_SOAK_SERVICES_DIR, default
# /tmp/goim-soak-services) and stopped when the script ends. Release binaries are built first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

connections=10000
duration=1h
out=/var/tmp/goim-rs-soak
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
    --connections) connections=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--connections N] [--duration 1h] [--out DIR] [-- goim-bench soak flags]" >&2; exit 64 ;;
    esac
done

export GOIM_SERVICES_DIR="${GOIM_SOAK_SERVICES_DIR:-/tmp/goim-soak-services}"
stop_services() { scripts/services.sh stop >/dev/null 2>&1 || true; }
trap stop_services EXIT

cargo build --release --locked -p goim -p goim-bench \
    --bin goim-logic --bin goim-comet --bin goim-job --bin goim-bench
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"

scripts/services.sh start >/dev/null
# shellcheck disable=SC1090
eval "$(scripts/services.sh env)"

mkdir -p "$out"
start=$(date +%s)
# goim-bench takes the tier binaries from next to --goim-bin.
"$target/release/goim-bench" soak --goim-bin "$target/release/goim" --out "$out" \
    --connections "$connections" --duration "$duration" --services-dir "$GOIM_SERVICES_DIR" \
    "${extra[@]}"
echo "soak: $(( $(date +%s) - start ))s; summary in $out/summary.md, plots $out/rss.png $out/rss-services.png $out/connections.png $out/pushes.png $out/delivered.png"
