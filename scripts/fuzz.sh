#!/usr/bin/env bash
# Fuzzes every target in fuzz/fuzz_targets/ for FUZZ_SECONDS each (default 30): the goim wire
# decoder (`decode`) first, then the rest as `cargo fuzz list` names them (comet's WebSocket
# frame decoder, HTTP request heads and long-poll requests, logic's auth tokens, the gRPC
# handlers of comet and logic, and any target added since). Stops at the first target that
# crashes, non-zero; libFuzzer leaves the input under fuzz/artifacts/<target>/.
# `FUZZ_TARGETS="decode long_poll"` runs only those.
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
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    # `decode` first, as before there were others; the rest in `cargo fuzz list`'s order.
    mapfile -t listed < <(cargo fuzz list)
    targets=(decode)
    for t in "${listed[@]}"; do
        [[ "$t" == decode ]] || targets+=("$t")
    done
fi

for target in "${targets[@]}"; do
    cargo fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1
    echo "fuzz.sh: $target ran ${seconds}s without a crash"
done
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
