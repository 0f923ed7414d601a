#!/usr/bin/env bash
# Installs what is missing, then runs every test of podswitch:
#   unit and golden-byte tests, scenario tests of the pipeline, integration tests that build
#   network namespaces (as root; without root they print SKIPPED), and a short fuzz run of the
#   frame parser.
# Environment: PODSWITCH_FUZZ_SECONDS (default 20; 0 skips the fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh

podswitch_install_rust
podswitch_install_debs "${PODSWITCH_DEBS[@]}"
podswitch_need_root || true

echo "== build" >&2
cargo build --workspace --all-targets --locked

echo "== tests" >&2
# Namespace tests share one lab per machine: they serialize themselves; run them one by one.
cargo test --workspace --locked -- --test-threads=1

fuzz_seconds=${PODSWITCH_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ] && [ -x scripts/fuzz.sh ]; then
  echo "== fuzz parse_frame for ${fuzz_seconds}s" >&2
  scripts/fuzz.sh "$fuzz_seconds"
fi
echo "== all tests passed" >&2
