//! `podswitch-perf`: the benchmark drivers behind `scripts/bench.sh`. One subcommand per
//! benchmark; each prints a readable report, or with `--json` one JSON object as the last line
//! of stdout, with progress on stderr. perf/README.md says how each one measures.
mod apps;
mod cni;
mod crossnode;
mod e2e;
mod forward;
mod harness;
mod kube_proxy;
mod lab;
mod micro_bench;
mod pipeline_bench;
mod portkinds;
mod policy_bench;
mod sync_bench;
mod sync_curve;

#[global_allocator]
static ALLOC: policy_bench::CountingAlloc = policy_bench::CountingAlloc;
mod pktgen_bench;
mod stats;
mod sys;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "podswitch-perf", about = "podswitch benchmarks (run them through scripts/bench.sh)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// 64-byte UDP frames per second pod -> pod: podswitch vs Linux bridge vs dpdk-testpmd (AF_XDP).
    Forward(forward::ForwardArgs),
    /// Per-packet cost of the whole pipeline in memory: 10,000 Services, 100,000 endpoints, 1,000,000 connections.
    Pipeline(pipeline_bench::PipelineArgs),
    /// Instructions per packet (callgrind) of each piece of the per-packet path: parse, LPM, Service pick, conntrack, policy, whole pipeline.
    Micro(micro_bench::MicroArgs),
    /// NetworkPolicy at scale: compile 1,000 policies over 10,000 pods; new connections/s with them in force.
    Policy(policy_bench::PolicyArgs),
    /// Objects to tables in force: full sync of 10k Services x 10 endpoints + 1k policies over 10k pods; one EndpointSlice change.
    Sync(sync_bench::SyncArgs),
    /// The sync benchmark at five sizes (5,000 to 50,000 Services): a table and an SVG in perf/results/.
    SyncCurve(sync_curve::SyncCurveArgs),
    /// 64-byte frames/s from one core on one veth: pktgen (AF_XDP) vs trafgen, side by side.
    Pktgen(pktgen_bench::PktgenArgs),
    /// End to end through a lab node, one generator: podswitch (10k Services, 1k policies) vs the kernel with kube-proxy's nftables rules vs OVS AF_XDP; 64 B and IMIX rate, no-drop rate, latency, CPU per packet.
    E2e(e2e::E2eArgs),
    /// Pod -> pod on another node: podswitch --pod-network vxlan|routed vs the kernel's VXLAN (as flannel sets it up) and routing; 64-byte UDP frames/s and one TCP stream.
    Crossnode(crossnode::CrossnodeArgs),
    /// Applications pod -> pod and through a ClusterIP: iperf3 (1 and 8 streams), nginx + wrk (keep-alive, new connections), podswitch vs the kernel (bridge, kube-proxy nftables); CPU used.
    ///
    /// In one run, rounds interleaved (the order rotates): iperf3 with one and --streams TCP
    /// streams pod a -> pod b and pod a -> ClusterIP -> pod b; nginx in pod b behind the
    /// ClusterIP driven by wrk from pod a (2 threads, --connections), keep-alive and
    /// `Connection: close` (requests/s, p99 latency). Setups: `switch` (podswitch, adaptive
    /// polling unless --busy-poll, the pods' tx checksum offload off) and `kernel` (the pods on
    /// a Linux bridge with default offloads, br_netfilter, kube-proxy's nftables rules for the
    /// Service). CPU of each run: the switch process + the pods' programs + ksoftirqd.
    /// After each switch workload, KERNEL_LOST per port (frames the kernel dropped before the
    /// switch saw them: receive ring full, no fill frame). Medians over rounds; --json: the last
    /// line starts {"switch_tcp_gbps","kernel_tcp_gbps","switch_svc_tcp_gbps",
    /// "kernel_svc_tcp_gbps","switch_rr_per_s","kernel_rr_per_s","switch_conn_per_s",
    /// "kernel_conn_per_s","switch_cpu_per_req_us","kernel_cpu_per_req_us",...}. Files:
    /// apps.md, apps.json in the results directory. perf/README.md says how it measures.
    Apps(apps::AppsArgs),
    /// Pod-port mechanisms that keep the pods' offloads, side by side: AF_PACKET + PACKET_VNET_HDR on veth host ends vs tap + IFF_VNET_HDR vs a kernel bridge; one iperf3 stream, forwarder CPU per GB, frame sizes carried.
    Portkinds(portkinds::PortkindsArgs),
    /// CNI plugin: ADD to first packet forwarded (p50/p99 over 200 pods) and pods created/deleted per second, podswitch-cni vs ptp + host-local.
    Cni(cni::CniArgs),
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Forward(a) => forward::main(a),
        Cmd::Pipeline(a) => pipeline_bench::main(a),
        Cmd::Micro(a) => micro_bench::main(a),
        Cmd::Policy(a) => policy_bench::main(a),
        Cmd::Sync(a) => sync_bench::main(a),
        Cmd::SyncCurve(a) => sync_curve::main(a),
        Cmd::Pktgen(a) => pktgen_bench::main(a),
        Cmd::E2e(a) => e2e::main(a),
        Cmd::Crossnode(a) => crossnode::main(a),
        Cmd::Cni(a) => cni::main(a),
        Cmd::Apps(a) => apps::main(a),
        Cmd::Portkinds(a) => portkinds::main(a),
    };
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("podswitch-perf: {e:#}");
            std::process::exit(1);
        }
    }
}
