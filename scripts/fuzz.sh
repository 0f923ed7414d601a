#!/usr/bin/env bash
# Fuzzes switch::wire::parse_frame (fuzz/fuzz_targets/parse_frame.rs) with cargo-fuzz/libFuzzer.
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
#
# Installs cargo-fuzz if missing. The toolchain here is stable, so cargo-fuzz's -Z flags need
# RUSTC_BOOTSTRAP=1. The corpus grows in fuzz/corpus/parse_frame (git-ignored) and starts from
# the golden frames in fuzz/seeds/parse_frame; a crash leaves its input in
# fuzz/artifacts/parse_frame and makes this script exit non-zero.
set -euo pipefail

secs="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

cd "$root/fuzz"
mkdir -p corpus/parse_frame
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

RUSTC_BOOTSTRAP=1 cargo fuzz run parse_frame \
    "$root/fuzz/corpus/parse_frame" "$root/fuzz/seeds/parse_frame" \
    -- -max_total_time="$secs" 2>&1 | tee "$log"

echo
echo "fuzz.sh: parse_frame, ${secs}s: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
echo "fuzz.sh: final stats: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)"
