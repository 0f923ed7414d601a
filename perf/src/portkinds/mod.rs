//! `podswitch-perf portkinds`: which pod-port mechanism keeps the pods' offloads (issue #13
//! part 1), measured side by side with the kernel: two pod namespaces at default offloads (no
//! `ethtool -K ... tx off`) wired in turn by
//!
//! - `packet_vnet`: veth pairs, an AF_PACKET socket with `PACKET_VNET_HDR` (TPACKET_V2 ring,
//!   `PACKET_QDISC_BYPASS`) on each host end ([`packet_port`]), the node namespace's stack kept
//!   off those frames by an nftables netdev ingress drop ([`topo::HostDrop`]);
//!   `packet_vnet_stack_drop` leaves that to the IP stack (no address, forwarding off) to show
//!   what the drop costs;
//! - `tap_vnet`: a tap device per pod as its `eth0` (`IFF_VNET_HDR`, TSO/checksum offload
//!   accepted) ([`tap_port`]);
//! - `kernel_bridge`: veth pairs on a Linux bridge (the baseline, as `bench apps` has it);
//!
//! and for the first two the same minimal forwarder ([`forwarder`]): one thread of this process
//! pinned to `--fwd-core`, every frame from one pod's port to the other's and back, super-frames
//! whole with their vnet header (the mechanism's ceiling). `*_csum` runs the same with the
//! forwarder finishing partial checksums ([`vnet::finish_checksum`]).
//!
//! Each turn: namespaces up, the mechanism wired, one iperf3 stream pod a -> pod b for
//! `--seconds`, down. Reported per turn: Gbit/s (receiver), retransmissions, the forwarder
//! thread's CPU time per GB of iperf3 data (schedstat), all cores' busy time per GB (from
//! /proc/stat: the whole machine, other load included), the frame sizes the forwarder saw per
//! direction (max, average, how many above 1,514 bytes, i.e. GSO kept), and pod b's `eth0`
//! receive count (skbs) against the frames sent to it (one skb per super-frame or segmented).
//! Rounds rotate the order; figures are medians over rounds.
//!
//! Output: a table on stdout, or with `--json` one JSON object as the last line, starting with
//! `{"packet_vnet_gbps":…,"tap_vnet_gbps":…,"kernel_bridge_gbps":…,"packet_vnet_cpu_s_per_gb":…,
//! "tap_vnet_cpu_s_per_gb":…,…,"rounds":…`; `portkinds.md` and `portkinds.json` under the
//! results directory. Exit status 0 when every turn gave its figure.
mod forwarder;
mod packet_port;
mod report;
mod tap_port;
mod topo;
mod vnet;

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::apps::load::{self, TcpResult};
use crate::harness::report::OutputArgs;
use crate::harness::{host, preflight, progress, rounds};
use crate::sys::CoreTimes;
use forwarder::{Config, DirStats, Forwarder, Mechanism};
use topo::HostDrop;

const IPERF_PORT: u16 = 5201;

/// Pod-port mechanisms that keep pod offloads: AF_PACKET + PACKET_VNET_HDR vs tap + IFF_VNET_HDR vs a kernel bridge.
#[derive(Debug, Clone, clap::Args)]
pub struct PortkindsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Rounds; each runs every kind once (order rotating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Length of each iperf3 run, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Kinds to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Kind::ALL)]
    pub kinds: Vec<Kind>,
    /// Core of the forwarder thread.
    #[arg(long, default_value_t = 1)]
    pub fwd_core: usize,
    /// The forwarder polls without sleeping (default: it sleeps in epoll_wait when idle).
    #[arg(long)]
    pub busy_poll: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Kind {
    PacketVnet,
    TapVnet,
    KernelBridge,
    PacketVnetCsum,
    TapVnetCsum,
    PacketVnetStackDrop,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::PacketVnet, Kind::TapVnet, Kind::KernelBridge, Kind::PacketVnetCsum, Kind::TapVnetCsum, Kind::PacketVnetStackDrop];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PacketVnet => "packet_vnet",
            Kind::TapVnet => "tap_vnet",
            Kind::KernelBridge => "kernel_bridge",
            Kind::PacketVnetCsum => "packet_vnet_csum",
            Kind::TapVnetCsum => "tap_vnet_csum",
            Kind::PacketVnetStackDrop => "packet_vnet_stack_drop",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::PacketVnet => "AF_PACKET + PACKET_VNET_HDR on the veth host ends, forwarder passes super-frames",
            Kind::TapVnet => "tap + IFF_VNET_HDR as the pods' eth0, forwarder passes super-frames",
            Kind::KernelBridge => "veths on a Linux bridge (kernel baseline)",
            Kind::PacketVnetCsum => "as packet_vnet, the forwarder finishes partial checksums",
            Kind::TapVnetCsum => "as tap_vnet, the forwarder finishes partial checksums",
            Kind::PacketVnetStackDrop => "as packet_vnet, without the nftables drop: the node's IP stack takes each frame too and drops it",
        }
    }

    fn mechanism(self) -> Option<Mechanism> {
        match self {
            Kind::PacketVnet | Kind::PacketVnetCsum | Kind::PacketVnetStackDrop => Some(Mechanism::Packet),
            Kind::TapVnet | Kind::TapVnetCsum => Some(Mechanism::Tap),
            Kind::KernelBridge => None,
        }
    }

    /// How the node's stack is kept off the frames an AF_PACKET forwarder takes.
    fn host_drop(self) -> HostDrop {
        if self == Kind::PacketVnetStackDrop {
            HostDrop::Stack
        } else {
            HostDrop::Nft
        }
    }

    fn finishes_checksums(self) -> bool {
        matches!(self, Kind::PacketVnetCsum | Kind::TapVnetCsum)
    }
}

impl rounds::Contender for Kind {
    fn name(self) -> &'static str {
        Kind::name(self)
    }
}

/// One kind in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub kind: Kind,
    pub tcp: TcpResult,
    /// GB (1e9 bytes) iperf3's receiver got.
    pub data_gb: f64,
    /// The forwarder thread's CPU during the run, seconds, and per GB of `data_gb`.
    pub fwd_cpu_s: Option<f64>,
    pub fwd_cpu_s_per_gb: Option<f64>,
    /// All cores' busy time during the run (the whole machine), seconds, and per GB.
    pub busy_cpu_s: f64,
    pub busy_cpu_s_per_gb: Option<f64>,
    /// What the forwarder moved during the run, pod a -> pod b and back.
    pub a_to_b: Option<DirStats>,
    pub b_to_a: Option<DirStats>,
    /// AF_PACKET ring-full drops over the whole turn.
    pub ring_drops: Option<u64>,
    /// skbs and bytes pod b's eth0 received during the run.
    pub pod_b_rx_packets: Option<u64>,
    pub pod_b_rx_bytes: Option<u64>,
    /// Frames the kernel dropped because a core's input backlog was full (`netdev_max_backlog`;
    /// /proc/net/softnet_stat, all cores, the whole machine) during the run.
    pub backlog_drops: Option<u64>,
    /// TCP counters of the sender (pod a) and the receiver (pod b) after the run
    /// ([`topo::TCP_COUNTERS`]: retransmissions and why, out-of-order arrivals, checksum errors).
    pub pod_a_tcp: std::collections::BTreeMap<String, u64>,
    pub pod_b_tcp: std::collections::BTreeMap<String, u64>,
    /// Non-zero drop counters of every interface of the turn (`NS/IFNAME rx_dropped`), after the run.
    pub link_drops: std::collections::BTreeMap<String, u64>,
    /// The pods' eth0 offloads as ethtool showed them.
    pub pod_offloads: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    #[serde(flatten)]
    pub host: host::Host,
    pub iperf3: String,
    pub git: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub rounds: u32,
    pub seconds: u32,
    pub kinds: Vec<Kind>,
    pub fwd_core: usize,
    pub busy_poll: bool,
}

fn progress(msg: impl AsRef<str>) {
    progress::say_timed("portkinds", msg);
}

pub fn main(args: PortkindsArgs) -> Result<i32> {
    if !preflight::root("portkinds", "network namespaces, AF_PACKET, tap devices") {
        return Ok(1);
    }
    if args.rounds == 0 || args.seconds == 0 || args.kinds.is_empty() {
        bail!("--rounds and --seconds must be positive and --kinds non-empty");
    }
    preflight::online_core("fwd-core", args.fwd_core)?;
    let mut need = vec!["ip", "ethtool", "sysctl", "iperf3", "ping"];
    if args.kinds.iter().any(|k| k.mechanism() == Some(Mechanism::Packet) && k.host_drop() == HostDrop::Nft) {
        need.push("nft");
    }
    need.push("nstat");
    preflight::programs(&need, "scripts/bench.sh portkinds installs them")?;
    let run = preflight::begin("portkinds", "pk", topo::destroy)?;
    progress(format!(
        "{} round(s) of {} x {} s of iperf3; forwarder on core {} ({}); load average {}",
        args.rounds,
        rounds::names(&args.kinds),
        args.seconds,
        args.fwd_core,
        if args.busy_poll { "busy-polling" } else { "sleeps in epoll when idle" },
        run.start.loadavg
    ));
    let mut notes = Vec::new();
    let done = rounds::rotated("portkinds", args.rounds, &args.kinds, &mut notes, |kind, round, _| turn(&args, &run.workdir, kind, round));
    if let Some(status) = done.take_down("portkinds", run.guard) {
        return Ok(status);
    }
    let env = Env {
        host: run.start.host(),
        iperf3: host::first_line_of(&["iperf3", "--version"]),
        git: host::git_describe(),
    };
    let params = Params { rounds: args.rounds, seconds: args.seconds, kinds: args.kinds.clone(), fwd_core: args.fwd_core, busy_poll: args.busy_poll };
    let summary = report::summarize(done.samples, params, env, notes, run.start.utc.clone(), run.start.elapsed_s());
    crate::harness::report::publish(&args.output, &summary, || report::files(&summary), || report::markdown(&summary), progress)?;
    Ok(if summary.complete { 0 } else { 1 })
}

/// One kind's turn: namespaces up, wired, one iperf3 run, everything down.
fn turn(args: &PortkindsArgs, workdir: &Path, kind: Kind, round: u32) -> Result<Sample> {
    let tag = format!("round {round}/{} {}", args.rounds, kind.name());
    progress(format!("{tag}: starting ({})", kind.title()));
    let res = topo::namespaces().and_then(|()| measure(args, workdir, kind, round, &tag));
    topo::destroy();
    res
}

fn measure(args: &PortkindsArgs, workdir: &Path, kind: Kind, round: u32, tag: &str) -> Result<Sample> {
    let fwd = match kind.mechanism() {
        None => {
            topo::veths()?;
            topo::bridge()?;
            None
        }
        Some(m) => {
            if m == Mechanism::Packet {
                topo::veths()?;
                topo::host_drop(kind.host_drop(), workdir)?;
            }
            Some(Forwarder::start(Config { mechanism: m, finish_checksums: kind.finishes_checksums(), core: args.fwd_core, busy_poll: args.busy_poll })?)
        }
    };
    topo::address_pods()?;
    let pod_offloads = format!("a: {}; b: {}", topo::offloads(topo::NS_A), topo::offloads(topo::NS_B));
    let snap0 = fwd.as_ref().map(Forwarder::snapshot);
    let rx0 = (topo::eth0_counter(topo::NS_B, "rx_packets"), topo::eth0_counter(topo::NS_B, "rx_bytes"));
    let backlog0 = backlog_drops();
    let cores0 = CoreTimes::read();
    let run = load::Run { client_ns: topo::NS_A, server_ns: topo::NS_B, seconds: args.seconds, workdir, switch: None };
    let tcp = load::iperf3(&run, topo::IP_B.parse()?, IPERF_PORT, 1)?;
    let cores1 = CoreTimes::read();
    let backlog1 = backlog_drops();
    let (pod_a_tcp, pod_b_tcp) = (topo::tcp_counters(topo::NS_A), topo::tcp_counters(topo::NS_B));
    let link_drops = topo::link_drops();
    let snap1 = fwd.as_ref().map(Forwarder::snapshot);
    let rx1 = (topo::eth0_counter(topo::NS_B, "rx_packets"), topo::eth0_counter(topo::NS_B, "rx_bytes"));
    let ring_drops = fwd.map(Forwarder::stop).filter(|_| kind.mechanism() == Some(Mechanism::Packet));
    let data_gb = tcp.gbps * tcp.seconds / 8.0;
    let per_gb = |s: f64| (data_gb > 0.0).then(|| crate::stats::round_to(s / data_gb, 4));
    let busy_jiffies: u64 = cores0.0.iter().zip(cores1.0.iter()).map(|(a, b)| b.busy.saturating_sub(a.busy)).sum();
    let busy_cpu_s = busy_jiffies as f64 / clock_ticks();
    let fwd_cpu_s = snap0.zip(snap1).map(|(a, b)| b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9);
    let (a_to_b, b_to_a) = match (snap0, snap1) {
        (Some(a), Some(b)) => (Some(b.ab.since(&a.ab)), Some(b.ba.since(&a.ba))),
        _ => (None, None),
    };
    let delta = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| b.saturating_sub(a));
    let s = Sample {
        round,
        kind,
        data_gb: crate::stats::round_to(data_gb, 3),
        fwd_cpu_s: fwd_cpu_s.map(|c| crate::stats::round_to(c, 3)),
        fwd_cpu_s_per_gb: fwd_cpu_s.and_then(per_gb),
        busy_cpu_s: crate::stats::round_to(busy_cpu_s, 2),
        busy_cpu_s_per_gb: per_gb(busy_cpu_s),
        a_to_b,
        b_to_a,
        ring_drops,
        pod_b_rx_packets: delta(rx0.0, rx1.0),
        pod_b_rx_bytes: delta(rx0.1, rx1.1),
        backlog_drops: delta(backlog0, backlog1),
        pod_a_tcp,
        pod_b_tcp,
        link_drops,
        pod_offloads,
        tcp,
    };
    progress(format!("{tag}: {}", report::turn_line(&s)));
    Ok(s)
}

/// Frames dropped at a full input backlog so far, all cores (second column of
/// /proc/net/softnet_stat, hexadecimal); None if unreadable.
fn backlog_drops() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    parse_backlog_drops(&text)
}

fn parse_backlog_drops(text: &str) -> Option<u64> {
    text.lines().map(|l| l.split_whitespace().nth(1).and_then(|x| u64::from_str_radix(x, 16).ok())).sum()
}

/// Jiffies per second of /proc/stat (USER_HZ).
fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as f64,
        _ => 100.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_drops_add_up_over_cores() {
        let t = "0400cf7f 00000000 0000002e 00000000\n54ba7cb2 000422c1 00000ec9 00000000\n";
        assert_eq!(parse_backlog_drops(t), Some(0x422c1));
        assert_eq!(parse_backlog_drops("garbage\n"), None);
    }
}
