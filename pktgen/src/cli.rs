//! The command line: `pktgen send|recv|run|rfc2544`, with flags shared through groups.
//!
//! Contract: every traffic flag has a traffic-file key of the same name (see [`crate::spec`]);
//! flags are kept as text here and parsed by `spec`, so that both sources share one syntax and
//! one set of error messages. Nothing here touches the system.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switch::afxdp::xdp::XdpMode;

use crate::port::Fallback;
use crate::spec::TrafficSettings;

const AFTER_HELP: &str = "\
Traffic file (-f FILE): one `KEY VALUE` (or `KEY = VALUE`) per line, KEY a traffic flag's long
name without `--` (proto, src-mac, dst-mac, src-ip, dst-ip, src-port, dst-port, size, ttl, tos,
seed, rate, duration, count); `#` starts a comment. Flags override the file.

Values: addresses `10.0.0.1`, `10.0.0.1-10.0.0.9`, `10.0.0.0/24`; ports `80`, `1024-2047`;
sizes (Ethernet frames with FCS, 64-1518) `64`, `64,128`, `64*7,594*4,1518`, `64-1518`
(random), `imix`; rate `max`, `250000`, `250k`, `1.5m`, `1mpps`; duration `10s`, `500ms`, `2m`;
count `1000000`, `1m`.

AF_XDP only unless `--fallback kernel` is given: when AF_XDP cannot be opened pktgen says why and
exits with status 1. Receiving attaches an XDP program to the receiving interface for the run
(every frame of that queue then goes to pktgen, none to the kernel); an interface that already
has one (e.g. a podswitch port) is refused unless --replace-xdp.

In a `podswitch lab`: pods are network namespaces `psl_<namespace>_<name>` with `eth0`, so
  podswitch lab exec x/b -- pktgen recv -i eth0 --duration 20s
  podswitch lab exec x/a -- pktgen send -i eth0 --dst-ip <b's IP> --dst-port 9 --rate 100k --duration 10s
or, from one process (threads enter the namespaces):
  pktgen run --netns psl_x_a -i eth0 --rx-netns psl_x_b --rx-iface eth0 --dst-ip <b's IP> --rate 100k
Round-trip time against a pod's stack (ICMP echo, replies on the same interface):
  podswitch lab exec x/a -- pktgen run -i eth0 --proto icmp --dst-ip <b's IP> --rate 10k --duration 5s";

#[derive(Debug, Parser)]
#[command(
    name = "pktgen",
    version,
    about = "AF_XDP packet generator and receiver: rates, loss, reordering, latency, RFC 2544 throughput",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Send traffic from an interface (nothing is received).
    Send(SendArgs),
    /// Receive on an interface and match pktgen's frames: per-flow counts, loss inferred from
    /// sequence gaps, reordering, duplicates, one-way latency.
    Recv(RecvArgs),
    /// Send and receive (on a second interface, or replies on the same one): loss against what
    /// was sent, reordering, duplicates, one-way or round-trip latency.
    Run(RunArgs),
    /// RFC 2544 throughput: binary search over trials for the highest rate without loss, with
    /// the latency at that rate.
    Rfc2544(Rfc2544Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
}

impl From<XdpModeArg> for XdpMode {
    fn from(m: XdpModeArg) -> XdpMode {
        match m {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        }
    }
}

/// The interface and how to use it.
#[derive(Debug, Clone, Args)]
pub struct IoArgs {
    /// Interface to send on (and, for `recv`, to receive on).
    #[arg(short = 'i', long, value_name = "IFACE")]
    pub iface: String,
    /// Network namespace of the interface (a name in /run/netns or a path); the threads using
    /// it enter it, so one pktgen can send in one namespace and receive in another.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Queue of the interface.
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// XDP mode for receiving (default: native, generic where native is refused).
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpModeArg>,
    /// Fail unless the driver gives zero-copy AF_XDP.
    #[arg(long)]
    pub require_zerocopy: bool,
    /// Use a kernel socket instead of AF_XDP (never chosen silently).
    #[arg(long, value_enum)]
    pub fallback: Option<Fallback>,
    /// Replace an XDP program already attached to the receiving interface.
    #[arg(long)]
    pub replace_xdp: bool,
    /// Pin the sending thread (or, for `recv`, the receiving thread) to this core.
    #[arg(long)]
    pub core: Option<usize>,
    /// Entries of the AF_XDP rings.
    #[arg(long, default_value_t = 2048)]
    pub ring: u32,
}

/// What the frames look like (flags override the traffic file).
#[derive(Debug, Clone, Default, Args)]
pub struct TrafficArgs {
    /// Traffic file (see below).
    #[arg(short = 'f', long = "traffic", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// udp, tcp-syn, tcp (data) or icmp (echo requests).
    #[arg(long)]
    pub proto: Option<String>,
    /// Source MAC (default: the interface's).
    #[arg(long)]
    pub src_mac: Option<String>,
    /// Destination MAC (default: the next hop's, from the neighbour table).
    #[arg(long)]
    pub dst_mac: Option<String>,
    /// Source address(es) (default: the interface's).
    #[arg(long)]
    pub src_ip: Option<String>,
    /// Destination address(es).
    #[arg(long)]
    pub dst_ip: Option<String>,
    /// Source port(s) (default 1024).
    #[arg(long)]
    pub src_port: Option<String>,
    /// Destination port(s) (default 9).
    #[arg(long)]
    pub dst_port: Option<String>,
    /// Frame size(s) with FCS (default 64).
    #[arg(long)]
    pub size: Option<String>,
    #[arg(long)]
    pub ttl: Option<String>,
    #[arg(long)]
    pub tos: Option<String>,
    /// Seed of random size patterns.
    #[arg(long)]
    pub seed: Option<String>,
}

/// How fast and how long.
#[derive(Debug, Clone, Default, Args)]
pub struct PaceArgs {
    /// Frames per second, or `max` (default).
    #[arg(long)]
    pub rate: Option<String>,
    /// Stop after this long.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop after this many frames.
    #[arg(long)]
    pub count: Option<String>,
}

/// Tuning of the transmit loop.
#[derive(Debug, Clone, Args)]
pub struct TxTuning {
    /// Frames per TX batch.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=2048))]
    pub batch: u64,
    /// Copy mode: frames the kernel may send per sendto() (Linux 6.17+; 0 leaves its default
    /// of 32).
    #[arg(long, default_value_t = 256)]
    pub tx_budget: u32,
    /// Frames to build (default: a multiple of flows x sizes near 4096).
    #[arg(long, value_parser = clap::value_parser!(u32).range(64..=65536))]
    pub frames: Option<u32>,
}

/// The receiving side of `run` and `rfc2544`.
#[derive(Debug, Clone, Args)]
pub struct RxArgs {
    /// Interface to receive on (default: the sending interface: replies, round-trip time).
    #[arg(long, value_name = "IFACE")]
    pub rx_iface: Option<String>,
    /// Its network namespace (default: --netns).
    #[arg(long, value_name = "NAME")]
    pub rx_netns: Option<String>,
    /// Its queue (default: --queue).
    #[arg(long)]
    pub rx_queue: Option<u32>,
    /// Pin the receiving thread to this core.
    #[arg(long)]
    pub rx_core: Option<usize>,
    /// Spin on the RX ring instead of sleeping in poll() when idle.
    #[arg(long)]
    pub busy_poll: bool,
    /// After sending stops, wait this long for frames still on their way.
    #[arg(long, default_value = "500ms")]
    pub drain: String,
}

#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print one JSON object as the last line of stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart: latency distribution and rates over time.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress lines (the start-up line that says where pktgen sends or receives stays).
    #[arg(short, long)]
    pub quiet: bool,
    /// List every flow in the summary (default: when there are at most 16).
    #[arg(long)]
    pub per_flow: bool,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub io: IoArgs,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub pace: PaceArgs,
    #[command(flatten)]
    pub tuning: TxTuning,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub io: IoArgs,
    /// Stop after this many matched frames.
    #[arg(long)]
    pub count: Option<String>,
    /// Stop after this long.
    #[arg(long)]
    pub duration: Option<String>,
    /// Stop when nothing arrived for this long after the first frame.
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Flow ids to track (the sender's flow count; ids beyond are counted, not tracked).
    #[arg(long, default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub flows: u32,
    /// Spin on the RX ring instead of sleeping in poll() when idle.
    #[arg(long)]
    pub busy_poll: bool,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// `pktgen run`: everything `send` takes, and the receiving side.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub send: SendArgs,
    #[command(flatten)]
    pub rx: RxArgs,
}

#[derive(Debug, Clone, Args)]
pub struct Rfc2544Args {
    #[command(flatten)]
    pub io: IoArgs,
    #[command(flatten)]
    pub rx: RxArgs,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub tuning: TxTuning,
    /// Length of each trial.
    #[arg(long, default_value = "2s")]
    pub trial: String,
    /// Ceiling of the search (default: as fast as the generator goes).
    #[arg(long)]
    pub max_rate: Option<String>,
    /// Lowest rate worth a trial.
    #[arg(long, default_value = "1k")]
    pub min_rate: String,
    /// Stop when the pass/fail interval is within this share of the failing rate.
    #[arg(long, default_value = "0.5%")]
    pub resolution: String,
    /// Loss a trial may have and still pass (RFC 2544: none).
    #[arg(long, default_value = "0")]
    pub loss_tolerance: String,
    #[arg(long, default_value_t = 20)]
    pub max_trials: u32,
    #[command(flatten)]
    pub out: OutputArgs,
}

impl TrafficArgs {
    pub fn settings(&self) -> TrafficSettings {
        TrafficSettings {
            proto: self.proto.clone(),
            src_mac: self.src_mac.clone(),
            dst_mac: self.dst_mac.clone(),
            src_ip: self.src_ip.clone(),
            dst_ip: self.dst_ip.clone(),
            src_port: self.src_port.clone(),
            dst_port: self.dst_port.clone(),
            size: self.size.clone(),
            ttl: self.ttl.clone(),
            tos: self.tos.clone(),
            seed: self.seed.clone(),
            ..Default::default()
        }
    }
}

impl PaceArgs {
    pub fn apply(&self, s: &mut TrafficSettings) {
        if self.rate.is_some() {
            s.rate = self.rate.clone();
        }
        if self.duration.is_some() {
            s.duration = self.duration.clone();
        }
        if self.count.is_some() {
            s.count = self.count.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_a_send() {
        let c = Cli::try_parse_from([
            "pktgen", "send", "-i", "eth0", "--dst-ip", "10.0.0.2", "--size", "imix", "--rate", "1m", "--duration", "5s", "--json",
        ])
        .unwrap();
        let Cmd::Send(s) = c.cmd else { panic!() };
        assert_eq!(s.io.iface, "eth0");
        assert_eq!(s.traffic.size.as_deref(), Some("imix"));
        assert_eq!(s.pace.rate.as_deref(), Some("1m"));
        assert!(s.out.json);
        assert_eq!(s.tuning.batch, 64);
    }
}
