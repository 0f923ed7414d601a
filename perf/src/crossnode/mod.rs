//! `podswitch-perf crossnode`: pod -> pod on another node (issue #11), podswitch side by side
//! with the kernel, in one run.
//!
//! Setups ([`setups`]): podswitch with `--pod-network vxlan` and `routed` on both nodes, the
//! kernel's own VXLAN as flannel's vxlan backend sets it up, and the kernel's plain routing, on
//! one topology of two node namespaces on a direct underlay link with one pod on each
//! ([`topo`]). Figures per setup: 64-byte UDP frames per second from pod a to pod b (pktgen,
//! the project's AF_XDP generator, sending in pod a and receiving on pod b's `eth0`) and one TCP
//! stream's throughput (iperf3, [`tcp`]); and the highest rate each carries with at most 0.1%
//! lost (RFC 2544 search with pktgen), since the kernel setups throttle the generator to what
//! they carry while the switches are offered more than they take. Rounds interleave the setups (the order rotates from
//! round to round; each is brought up and taken down within its turn); figures are medians over
//! rounds, ratios switch/kernel of the medians and of each round. perf/README.md says how it
//! measures.
//!
//! Output: a table on stdout, or with `--json` one JSON object as the last line, starting with
//! `{"switch_vxlan_pps":…,"kernel_vxlan_pps":…,"switch_routed_pps":…,"kernel_routed_pps":…,
//! "switch_vxlan_tcp_gbps":…,"kernel_vxlan_tcp_gbps":…`; `crossnode.md` and `crossnode.json`
//! under the results directory. Exit status 0 when every setup asked for gave both figures.
mod report;
mod setups;
mod tcp;
mod topo;

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::harness::pktgen::{CpuSource, Gen, NdrResult, RateResult, Traffic};
use crate::harness::report::OutputArgs;
use crate::harness::{host, preflight, progress, rounds};
use setups::{Setup, SwitchOpts};
use tcp::TcpResult;
use topo::Topo;

/// Resolution of the rate search (share of the failing rate).
const NDR_RESOLUTION: f64 = 0.02;

/// Pod -> pod on another node: podswitch (vxlan, routed) vs the kernel's VXLAN (flannel) and routing.
#[derive(Debug, Clone, clap::Args)]
pub struct CrossnodeArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Rounds; each runs every setup once (order rotating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Setups to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Setup::ALL)]
    pub setups: Vec<Setup>,
    /// Length of each 64-byte UDP rate run, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Start of the CPU window inside a rate run, seconds after the sender started.
    #[arg(long, default_value_t = 0.7)]
    pub warmup: f64,
    /// Frames per second pktgen offers in the UDP run (default: as many as it can).
    #[arg(long, value_name = "PPS")]
    pub udp_rate: Option<u64>,
    /// Length of one trial of the RFC 2544 search for the highest rate the setup carries
    /// (with at most --ndr-loss-tolerance lost), seconds; 0 skips the search.
    #[arg(long, default_value_t = 1.0)]
    pub ndr_trial: f64,
    /// Share of the frames a search trial may lose and still pass (RFC 2544: 0).
    #[arg(long, default_value_t = 0.001)]
    pub ndr_loss_tolerance: f64,
    /// Ceiling of the search, frames per second: its first trial, the same for every setup
    /// (above what the generator reaches here, so that the first trial fails).
    #[arg(long, default_value_t = 1_200_000)]
    pub ndr_max_rate: u64,
    /// Trials of the search at most (between the ceiling and 1/40 of it; resolution 2%).
    #[arg(long, default_value_t = 12)]
    pub ndr_max_trials: u32,
    /// Length of the TCP stream (iperf3 -t), seconds; 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub tcp_seconds: u32,
    /// UDP flows (source ports 1024..1024+N-1).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub flows: u32,
    /// Core of the generator and receiver (pktgen) and of iperf3's client and server.
    #[arg(long, default_value_t = 0)]
    pub gen_core: usize,
    /// Core of the forwarding: both switches' workers, the kernel's RPS target on both nodes.
    #[arg(long, default_value_t = 1)]
    pub fwd_core: usize,
    /// Run the switches' workers with --busy-poll (both then spin on the forwarding core, each
    /// getting the scheduler's share of it).
    #[arg(long)]
    pub busy_poll: bool,
    /// The podswitch binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch: Option<PathBuf>,
    /// The pktgen binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub pktgen: Option<PathBuf>,
}

/// One setup in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub setup: Setup,
    pub udp_64: Option<RateResult>,
    /// The highest rate carried with at most `ndr_loss_tolerance` lost.
    pub ndr_64: Option<NdrResult>,
    pub tcp: Option<TcpResult>,
    /// Seconds from starting the switches until both routed the other node's pods.
    pub switch_ready_s: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    #[serde(flatten)]
    pub host: host::Host,
    pub iperf3: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub rounds: u32,
    pub setups: Vec<Setup>,
    pub duration_s: f64,
    pub tcp_seconds: u32,
    pub flows: u32,
    pub gen_core: usize,
    pub fwd_core: usize,
    pub busy_poll: bool,
    /// Frames per second offered in the UDP run (None: pktgen's maximum).
    pub udp_rate: Option<u64>,
    pub ndr_trial_s: f64,
    pub ndr_max_rate: u64,
    pub ndr_loss_tolerance: f64,
    pub ndr_resolution: f64,
}

fn progress(msg: impl AsRef<str>) {
    progress::say_timed("crossnode", msg);
}

pub fn main(args: CrossnodeArgs) -> Result<i32> {
    if !preflight::root("crossnode", "network namespaces, XDP") {
        return Ok(1);
    }
    if args.rounds == 0 || args.duration <= args.warmup + 0.3 || args.setups.is_empty() || !(0.0..1.0).contains(&args.ndr_loss_tolerance) {
        bail!("--rounds must be positive, --duration at least --warmup + 0.3 s, --setups non-empty, --ndr-loss-tolerance in [0, 1)");
    }
    preflight::gen_and_fwd_cores(args.gen_core, args.fwd_core)?;
    let podswitch = preflight::program_beside(&args.podswitch, "podswitch")?;
    let pktgen = preflight::program_beside(&args.pktgen, "pktgen")?;
    preflight::built(&[(&podswitch, "podswitch", "podswitch-control"), (&pktgen, "pktgen", "podswitch-pktgen")])?;
    preflight::programs(&["ip", "bridge", "taskset", "ethtool", "sysctl", "iperf3"], "scripts/bench.sh crossnode installs them")?;
    let run = preflight::begin("crossnode", "psx", destroy)?;
    let workdir = &run.workdir;
    progress(format!(
        "{} round(s) of {}; pktgen and iperf3 on core {}, forwarding on core {}{}",
        args.rounds,
        rounds::names(&args.setups),
        args.gen_core,
        args.fwd_core,
        if args.busy_poll { " (switches busy-polling)" } else { "" }
    ));
    progress("creating namespaces psx-node-1, psx-node-2, psx-a, psx-b");
    let t = Topo::create(args.fwd_core)?;
    let manifests = workdir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("cluster.yaml"), setups::manifests(&t))?;

    let sw = SwitchOpts { podswitch: &podswitch, manifests: &manifests, workdir, core: args.fwd_core, busy_poll: args.busy_poll };
    let gen = Gen { pktgen: &pktgen, gen_core: args.gen_core, fwd_core: args.fwd_core, workdir };
    let mut notes: Vec<String> = Vec::new();
    let done = rounds::rotated("crossnode", args.rounds, &args.setups, &mut notes, |setup, round, notes| {
        run_setup(&args, &t, &sw, &gen, setup, round, notes)
    });
    if let Some(status) = done.take_down("crossnode", run.guard) {
        return Ok(status);
    }
    let samples: Vec<Sample> = done.samples;
    let env = Env { host: run.start.host(), iperf3: host::first_line_of(&["iperf3", "--version"]) };
    let params = Params {
        rounds: args.rounds,
        setups: args.setups.clone(),
        duration_s: args.duration,
        tcp_seconds: args.tcp_seconds,
        flows: args.flows,
        gen_core: args.gen_core,
        fwd_core: args.fwd_core,
        busy_poll: args.busy_poll,
        udp_rate: args.udp_rate,
        ndr_trial_s: args.ndr_trial,
        ndr_max_rate: args.ndr_max_rate,
        ndr_loss_tolerance: args.ndr_loss_tolerance,
        ndr_resolution: NDR_RESOLUTION,
    };
    let summary = report::summarize(samples, params, env, notes, run.start.utc.clone(), run.start.elapsed_s());
    crate::harness::report::publish(&args.output, &summary, || report::files(&summary), || report::table(&summary), progress)?;
    Ok(if summary.complete() { 0 } else { 1 })
}

/// Removes the namespaces (with every process inside) and the switches' control sockets.
fn destroy() {
    topo::destroy();
    for n in &Topo::plan().nodes {
        let _ = std::fs::remove_file(setups::socket(n));
    }
}

/// One setup's turn: up, UDP rate, TCP stream, down.
fn run_setup(args: &CrossnodeArgs, t: &Topo, sw: &SwitchOpts, gen: &Gen, setup: Setup, round: u32, notes: &mut Vec<String>) -> Result<Sample> {
    let tag = format!("round {round}/{} {}", args.rounds, setup.name());
    progress(format!("{tag}: starting ({})", setup.title()));
    let mut running = setups::start(t, setup, sw)?;
    let mut s = Sample {
        round,
        setup,
        udp_64: None,
        ndr_64: None,
        tcp: None,
        switch_ready_s: match &running {
            setups::Running::Switch { ready_s, .. } => Some(*ready_s),
            setups::Running::Kernel => None,
        },
        errors: Vec::new(),
    };
    let res = measure(args, t, gen, &mut running, &tag, &mut s);
    if setup.is_switch() {
        for n in &t.nodes {
            let d = setups::switch_drops(sw.podswitch, n);
            if !d.is_empty() {
                let note = format!(
                    "round {round} {} {}: drops over its run: {}",
                    setup.name(),
                    n.name,
                    d.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                );
                progress(&note);
                notes.push(note);
            }
            let lost = setups::switch_port_losses(sw.podswitch, n);
            if !lost.is_empty() {
                let note = format!("round {round} {} {}: {}", setup.name(), n.name, lost.join("; "));
                progress(&note);
                notes.push(note);
            }
        }
    }
    for n in running.stop(t) {
        notes.push(format!("round {round} {}: {n}", setup.name()));
    }
    res?;
    Ok(s)
}

fn measure(args: &CrossnodeArgs, t: &Topo, gen: &Gen, running: &mut setups::Running, tag: &str, s: &mut Sample) -> Result<()> {
    let fail = |s: &mut Sample, what: &str, e: anyhow::Error| -> Result<()> {
        s.errors.push(format!("{what}: {}", rounds::failed("crossnode", tag, what, e)?));
        Ok(())
    };
    let traffic = Traffic {
        tx_netns: topo::NS_A,
        rx_netns: topo::NS_B,
        dst_ip: t.b.ip.to_string(),
        dst_port: 9,
        dst_mac: t.host_mac(&t.a, &t.nodes[0])?,
        src_ports: format!("1024-{}", 1024 + args.flows - 1),
    };
    match gen.rate_at(&traffic, "64", args.udp_rate, args.duration, args.warmup, CpuSource::CoreBusy(args.fwd_core)) {
        Ok(r) if r.received == 0 => fail(s, "64-byte UDP", anyhow::anyhow!("nothing arrived at pod b ({} frames sent)", r.sent))?,
        Ok(r) => {
            progress(format!(
                "{tag}: 64 B UDP {} pps (offered {}, lost {}){}",
                crate::stats::thousands(r.pps),
                crate::stats::thousands(r.offered_pps),
                crate::stats::thousands(r.lost),
                r.cpu_ns_per_pkt.map(|n| format!(", forwarding core {:.2} µs/pkt", n / 1000.0)).unwrap_or_default()
            ));
            s.udp_64 = Some(r);
        }
        Err(e) => fail(s, "64-byte UDP", e)?,
    }
    if let Some(e) = running.exited() {
        bail!("{e}");
    }
    if args.ndr_trial > 0.0 && s.udp_64.is_some() {
        let max = args.ndr_max_rate;
        match gen.ndr_tolerating(&traffic, "64", args.ndr_trial, max, (max / 40).max(1000), NDR_RESOLUTION, args.ndr_max_trials, args.ndr_loss_tolerance) {
            Ok(n) => {
                progress(format!(
                    "{tag}: highest rate with ≤{}% lost {} pps ({} trials)",
                    args.ndr_loss_tolerance * 100.0,
                    n.ndr_pps.map_or("-".into(), crate::stats::thousands),
                    n.trials
                ));
                s.ndr_64 = Some(n);
            }
            Err(e) => fail(s, "rate search", e)?,
        }
        if let Some(e) = running.exited() {
            bail!("{e}");
        }
    }
    if args.tcp_seconds > 0 {
        match tcp::stream(topo::NS_A, topo::NS_B, t.b.ip, args.tcp_seconds, args.gen_core, gen.workdir) {
            Ok(r) => {
                progress(format!("{tag}: TCP {:.2} Gbit/s ({} retransmits)", r.gbps, r.retransmits));
                s.tcp = Some(r);
            }
            Err(e) => fail(s, "TCP stream", e)?,
        }
    }
    if let Some(e) = running.exited() {
        bail!("{e}");
    }
    Ok(())
}
