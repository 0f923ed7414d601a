#!/usr/bin/env bash
# Benchmarks of podswitch. Not tests: they report figures and do not pass or fail on them.
#
# Usage: scripts/bench.sh NAME [--json] [ARGS...]
#        scripts/bench.sh --help            lists the benchmarks
#        scripts/bench.sh NAME --help       the benchmark's own options
#
# Each benchmark installs the Debian packages it needs (apt-get; `apt-get update` once, only if
# something is missing), builds the release binaries and runs its driver, a subcommand of
# target/release/podswitch-perf (crate perf/). With --json the last line of stdout is one JSON
# object; progress goes to stderr. perf/README.md says how each one measures.
#
# Adding a benchmark: a `podswitch-perf NAME` subcommand in perf/src/, a line in BENCHMARKS
# below, its packages in packages_for(), and a case in run_benchmark().
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

# name|description (the listing printed by --help)
BENCHMARKS=(
    "apps|applications pod -> pod and through a ClusterIP: iperf3 1 and 8 TCP streams, nginx + wrk keep-alive and Connection: close (req/s, p99), podswitch vs the kernel (bridge with default offloads, kube-proxy nftables rules), CPU used, KERNEL_LOST per port; target every switch figure >= the kernel's"
    "cni|CNI plugin: time from ADD to the pod's first packet at a peer pod (p50/p99 over 200 pods) and pods created/deleted per second, podswitch-cni + podswitch vs the reference ptp + host-local; target ADD p99 <= 1.5x ptp's"
    "crossnode|pod -> pod on another node: podswitch --pod-network vxlan and routed vs the kernel's VXLAN (flannel's setup) and routing; 64 B UDP frames/s (pktgen) and one TCP stream (iperf3); target switch/kernel >= 1.3 for VXLAN pps"
    "e2e|end to end through a lab node, one generator (pktgen): podswitch (10k Services, 1k policies) vs kernel + kube-proxy nftables rules vs OVS AF_XDP; 64 B / IMIX rate, no-drop rate, latency, CPU/packet"
    "forward|64-byte UDP frames/s pod -> pod: podswitch vs Linux bridge vs dpdk-testpmd (AF_XDP); target switch >= 0.9x testpmd"
    "pipeline|per-packet cost of the whole pipeline in memory: 10k Services, 100k endpoints, 1M connections; Mpps/core and instructions/packet"
    "micro|instructions per packet (callgrind) of each piece of the per-packet path: parse, LPM, Service pick, conntrack hit/insert, policy, whole pipeline"
    "portkinds|pod-port mechanisms that keep the pods' offloads: AF_PACKET + PACKET_VNET_HDR on veth host ends vs tap + IFF_VNET_HDR vs a Linux bridge; one iperf3 stream through a minimal forwarder (super-frames whole), Gbit/s, retransmissions, forwarder CPU per GB, frame sizes carried"
    "pktgen|64-byte frames/s from one core on one veth: pktgen (AF_XDP) vs trafgen side by side; target pktgen >= trafgen"
    "policy|compile 1,000 NetworkPolicies over 10,000 pods; new connections per core with them in force"
    "sync|objects to tables in force: full sync of 10k Services x 10 endpoints + 1k policies over 10k pods (--services --endpoints --pods --policies --namespaces), one EndpointSlice change (p50/p99), the agent's peak memory (max_rss_mb); targets 200 ms, 1 ms"
    "sync-curve|sync at five sizes, 5,000 to 50,000 Services (pods, policies, namespaces in proportion): table and SVG in perf/results/ (sync-curve.md, .svg); targets at 50k: 1 s, 1 ms p99 flat, 800 MB"
)

# Build dependencies of the workspace (see /work/shared/environment.md, "Crates and build").
BUILD_PACKAGES=(clang libelf-dev zlib1g-dev pkg-config m4)

packages_for() {
    case "$1" in
        apps) echo "iproute2 ethtool procps util-linux coreutils nftables iperf3 nginx-light wrk curl" ;;
        forward) echo "iproute2 ethtool procps util-linux coreutils netsniff-ng dpdk-dev librte-net-af-xdp23" ;;
        pipeline) echo "valgrind" ;;
        micro) echo "valgrind" ;;
        pktgen) echo "iproute2 ethtool procps util-linux coreutils netsniff-ng" ;;
        crossnode) echo "iproute2 ethtool procps util-linux coreutils iperf3" ;;
        portkinds) echo "iproute2 ethtool procps iputils-ping nftables iperf3" ;;
        cni) echo "iproute2 ethtool util-linux containernetworking-plugins" ;;
        e2e) echo "iproute2 ethtool procps util-linux coreutils nftables openvswitch-switch" ;;
        *) echo "" ;;
    esac
}

usage() {
    cat <<EOF
usage: scripts/bench.sh NAME [--json] [ARGS...]

Benchmarks:
EOF
    local b
    for b in "${BENCHMARKS[@]}"; do
        printf '  %-10s %s\n' "${b%%|*}" "${b#*|}"
    done
    cat <<EOF

Options common to all: --json (the last line of stdout is one JSON object; progress on stderr).
'scripts/bench.sh NAME --help' lists a benchmark's own options. Must run as root.
How each benchmark measures: perf/README.md. Last results: perf/results/.
EOF
}

known() {
    local b
    for b in "${BENCHMARKS[@]}"; do
        [[ "${b%%|*}" == "$1" ]] && return 0
    done
    return 1
}

ensure_packages() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        echo "bench.sh: installing ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi
}

build() {
    echo "bench.sh: building release binaries (podswitch, podswitch-cni, podswitch-perf, pktgen)" >&2
    (cd "$root" && cargo build --release --locked -p podswitch-control -p podswitch-cni -p podswitch-perf -p podswitch-pktgen --bins >&2)
}

run_benchmark() {
    local name="$1"
    shift
    case "$name" in
        forward)
            exec "$target/release/podswitch-perf" forward \
                --podswitch "$target/release/podswitch" \
                --results-dir "$root/perf/results" "$@"
            ;;
        pipeline)
            exec "$target/release/podswitch-perf" pipeline "$@"
            ;;
        micro)
            exec "$target/release/podswitch-perf" micro "$@"
            ;;
        policy)
            exec "$target/release/podswitch-perf" policy "$@"
            ;;
        sync)
            exec "$target/release/podswitch-perf" sync "$@"
            ;;
        sync-curve)
            exec "$target/release/podswitch-perf" sync-curve "$@"
            ;;
        e2e)
            exec "$target/release/podswitch-perf" e2e \
                --podswitch "$target/release/podswitch" \
                --pktgen "$target/release/pktgen" \
                --results-dir "$root/perf/results" "$@"
            ;;
        cni)
            exec "$target/release/podswitch-perf" cni \
                --podswitch "$target/release/podswitch" \
                --podswitch-cni "$target/release/podswitch-cni" \
                --results-dir "$root/perf/results" "$@"
            ;;
        apps)
            exec "$target/release/podswitch-perf" apps \
                --podswitch "$target/release/podswitch" \
                --results-dir "$root/perf/results" "$@"
            ;;
        crossnode)
            exec "$target/release/podswitch-perf" crossnode \
                --podswitch "$target/release/podswitch" \
                --pktgen "$target/release/pktgen" \
                --results-dir "$root/perf/results" "$@"
            ;;
        portkinds)
            exec "$target/release/podswitch-perf" portkinds \
                --results-dir "$root/perf/results" "$@"
            ;;
        pktgen)
            exec "$target/release/podswitch-perf" pktgen \
                --pktgen "$target/release/pktgen" \
                --results-dir "$root/perf/results" "$@"
            ;;
        *)
            echo "bench.sh: benchmark '$name' has no runner" >&2
            exit 2
            ;;
    esac
}

if (($# == 0)); then
    usage >&2
    exit 2
fi
case "$1" in
    -h | --help | help)
        usage
        exit 0
        ;;
esac
name="$1"
shift
if ! known "$name"; then
    echo "bench.sh: unknown benchmark '$name' (known: $(for b in "${BENCHMARKS[@]}"; do printf '%s\n' "${b%%|*}"; done | paste -sd, -))" >&2
    echo "bench.sh: see scripts/bench.sh --help" >&2
    exit 2
fi
for a in "$@"; do
    if [[ "$a" == "-h" || "$a" == "--help" ]]; then
        # The driver's own help needs neither root nor packages, only the build.
        build
        exec "$target/release/podswitch-perf" "$name" --help
    fi
done
if [[ "$(id -u)" != 0 ]]; then
    echo "bench.sh: benchmark '$name' must run as root (network namespaces, XDP, package installs)" >&2
    exit 1
fi
read -r -a pkgs <<<"$(packages_for "$name")"
ensure_packages "${BUILD_PACKAGES[@]}" "${pkgs[@]}"
build
run_benchmark "$name" "$@"
