#!/usr/bin/env bash
# Installs what is missing, then runs every test of podswitch:
#   unit and golden-byte tests, scenario tests of the pipeline, integration tests that build
#   network namespaces (as root; without root they print SKIPPED and pass, or fail when CI is
#   set, so a CI run cannot pass without them), and a short fuzz run of the
#   frame parser.
# Environment: PODSWITCH_FUZZ_SECONDS (default 20; 0 skips the fuzz run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/deps.sh

podswitch_install_rust
podswitch_install_debs "${PODSWITCH_DEBS[@]}"
# The reference CNI plugins (host-local, tuning, bandwidth, portmap in /usr/lib/cni) and libcni
# with Go to build a runtime's driver: cni/tests/ delegate IPAM to host-local and drive
# podswitch-cni through libcni; portmap writes its hostPort rules with iptables
# (installed with the switch's packages: the switch's own DNAT return rule needs it too).
podswitch_install_debs containernetworking-plugins golang-go golang-github-appc-cni-dev
# iperf3, nftables: perf/tests/portkinds.rs runs `podswitch-perf portkinds` (one TCP stream per
# pod-port kind; an nftables netdev chain keeps the node's stack off the AF_PACKET ports' frames).
podswitch_install_debs iperf3 nftables
podswitch_need_root || true

podswitch_install_promtool || echo "promtool could not be installed: the metrics lint test will say why" >&2

echo "== build" >&2
cargo build --workspace --all-targets --locked

echo "== lint (workspace lints, warnings are errors)" >&2
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets --locked -- -D warnings
else
  echo "clippy is not installed (rustup component add clippy): the lint step did not run" >&2
fi

fuzz_seconds=${PODSWITCH_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  echo "== fuzz parse_frame for ${fuzz_seconds}s" >&2
  scripts/fuzz.sh "$fuzz_seconds" > target/fuzz.log 2>&1 || { tail -40 target/fuzz.log; echo "fuzzing found a crash (see fuzz/artifacts)" >&2; exit 1; }
  tail -1 target/fuzz.log
fi

echo "== tests" >&2
# Namespace tests share one lab per machine: they serialize themselves; run them one by one.
cargo test --workspace --locked -- --test-threads=1
