#!/usr/bin/env bash
# Fuzzes the goim wire decoder (fuzz/fuzz_targets/decode.rs) for FUZZ_SECONDS (default 30).
# Exits non-zero if the target crashes; libFuzzer leaves the input under fuzz/artifacts/decode/.
#
# Runs on stable: cargo-fuzz needs nightly-only flags (-Zsanitizer), which RUSTC_BOOTSTRAP unlocks.
# Build output goes outside the clone (as with .cargo/config.toml for the main workspace), and to
# its own directory because sanitizer flags would otherwise rebuild the main target dir.
set -euo pipefail

seconds="${FUZZ_SECONDS:-30}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/goim-rs-fuzz-target}"

cd "$root/fuzz"
cargo fuzz run decode -- -max_total_time="$seconds" -print_final_stats=1
echo "fuzz.sh: decode ran ${seconds}s without a crash"
