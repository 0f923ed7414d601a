//! `podswitch-perf e2e`: end-to-end forwarding through a lab node, the same generator (pktgen)
//! for every path, side by side in one run (issue #6, part 1).
//!
//! Paths: pod -> pod, pod -> ClusterIP -> pod, and external -> NodePort -> pod. Forwarders:
//! podswitch (10,000 Services and 1,000 NetworkPolicies loaded), the node's Linux kernel set up
//! as kube-proxy's nftables mode sets it up for the same 10,000 Services, and (pod -> pod only)
//! Open vSwitch's userspace datapath with AF_XDP ports. Figures per path and forwarder: 64-byte
//! and IMIX forwarding rate, no-drop rate (RFC 2544 search), one-way latency at a fixed rate and
//! the forwarder's CPU time per packet. Rounds interleave the forwarders (their order rotates
//! from round to round); figures are medians over rounds. perf/README.md says how it measures.
//!
//! Output: a table on stdout, or with `--json` one JSON object as the last line, starting with
//! `{"switch_svc_pps":…,"kernel_nft_pps":…,"switch_fwd_pps":…,"ovs_afxdp_pps":…`; the report
//! `e2e.md`, `e2e.json` and the charts `e2e-*.svg` under the results directory.
mod nft;
mod objects;
mod ovs;
mod report;
mod topo;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::harness::report::OutputArgs;
use crate::harness::{host, preflight, progress, rounds};
use crate::sys::{self, Proc};
use crate::harness::pktgen::{CpuSource, Gen, LatencyResult, NdrResult, RateResult, Traffic};
use objects::Cluster;
use topo::{Topo, NS_NODE, UPLINK};

const SOCKET: &str = "/run/podswitch/pse-bench.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fwd {
    Switch,
    Kernel,
    Ovs,
}

impl rounds::Contender for Fwd {
    fn name(self) -> &'static str {
        Fwd::name(self)
    }
}

impl Fwd {
    pub fn name(self) -> &'static str {
        match self {
            Fwd::Switch => "switch",
            Fwd::Kernel => "kernel",
            Fwd::Ovs => "ovs",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Fwd::Switch => "podswitch",
            Fwd::Kernel => "kernel + kube-proxy nft",
            Fwd::Ovs => "OVS AF_XDP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// pod a -> pod b by pod IP.
    PodPod,
    /// pod a -> ClusterIP 10.96.0.10:80 -> pod b:8080.
    PodSvc,
    /// external 172.18.0.100 -> NodePort 172.18.0.2:30080 -> pod b:8080.
    Nodeport,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::PodPod => "pod-pod",
            PathKind::PodSvc => "pod-svc",
            PathKind::Nodeport => "nodeport",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            PathKind::PodPod => "pod → pod",
            PathKind::PodSvc => "pod → ClusterIP → pod",
            PathKind::Nodeport => "external → NodePort → pod",
        }
    }
}

/// End to end through a lab node: podswitch vs the kernel with kube-proxy's nftables rules vs OVS AF_XDP.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Rounds; each runs every forwarder once (order rotating), every path and measurement.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Forwarders to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Fwd::Switch, Fwd::Kernel, Fwd::Ovs])]
    pub forwarders: Vec<Fwd>,
    /// Paths to measure (OVS only does pod-pod: plain forwarding).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [PathKind::PodPod, PathKind::PodSvc, PathKind::Nodeport])]
    pub paths: Vec<PathKind>,
    /// Length of each forwarding-rate run (64-byte and IMIX), seconds.
    #[arg(long, default_value_t = 2.5)]
    pub duration: f64,
    /// Start of the CPU window inside a rate run, seconds after the sender started.
    #[arg(long, default_value_t = 0.7)]
    pub warmup: f64,
    /// Length of one RFC 2544 trial, seconds (0 skips the no-drop search).
    #[arg(long, default_value_t = 0.5)]
    pub ndr_trial: f64,
    /// RFC 2544 search resolution (share of the failing rate).
    #[arg(long, default_value_t = 0.02)]
    pub ndr_resolution: f64,
    /// RFC 2544 trials at most (the first runs at 1.1x the rate the 64-byte rate run offered).
    #[arg(long, default_value_t = 8)]
    pub ndr_max_trials: u32,
    /// Rate of the latency run, frames per second (well below every path's capacity).
    #[arg(long, default_value_t = 50_000)]
    pub latency_rate: u64,
    /// Length of the latency run, seconds (0 skips it).
    #[arg(long, default_value_t = 1.5)]
    pub latency_duration: f64,
    /// UDP flows (source ports 1024..1024+N-1).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub flows: u32,
    /// Services loaded (the measured one included).
    #[arg(long, default_value_t = 10_000)]
    pub services: u32,
    /// Endpoints of each background Service.
    #[arg(long, default_value_t = 10)]
    pub endpoints: u32,
    /// Pods on other nodes (the background Services' endpoints).
    #[arg(long, default_value_t = 10_000)]
    pub background_pods: u32,
    /// NetworkPolicies loaded into the switch (the kernel path has none: kube-proxy does not do policy).
    #[arg(long, default_value_t = 1000)]
    pub policies: u32,
    /// Services per nftables transaction when loading the kernel's rules.
    #[arg(long, default_value_t = 1000)]
    pub nft_batch: usize,
    /// Core of the generator and receiver (pktgen).
    #[arg(long, default_value_t = 0)]
    pub gen_core: usize,
    /// Core of the forwarder: the switch's worker, OVS's PMD, the kernel's RPS target.
    #[arg(long, default_value_t = 1)]
    pub fwd_core: usize,
    /// The podswitch binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch: Option<PathBuf>,
    /// The pktgen binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub pktgen: Option<PathBuf>,
}

/// One path through one forwarder in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub fwd: Fwd,
    pub path: PathKind,
    pub rate_64: Option<RateResult>,
    pub rate_imix: Option<RateResult>,
    pub ndr_64: Option<NdrResult>,
    pub latency_64: Option<LatencyResult>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    #[serde(flatten)]
    pub host: host::Host,
    pub ovs_version: String,
    pub nft_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub services: usize,
    pub endpoints: usize,
    pub policies: u32,
    pub pods: u32,
    pub nft_chains: usize,
    pub nft_load_s: f64,
    pub switch_start_s: Vec<f64>,
    pub flows: u32,
    pub gen_core: usize,
    pub fwd_core: usize,
    pub rounds: u32,
    pub duration_s: f64,
    pub ndr_trial_s: f64,
    pub ndr_resolution: f64,
    pub latency_rate: u64,
    pub latency_duration_s: f64,
}

fn progress(msg: impl AsRef<str>) {
    progress::say_timed("e2e", msg);
}

struct Ctx<'a> {
    args: &'a E2eArgs,
    topo: Topo,
    podswitch: PathBuf,
    pktgen: PathBuf,
    workdir: PathBuf,
    manifests: PathBuf,
    notes: Vec<String>,
    switch_start_s: Vec<f64>,
}

pub fn main(args: E2eArgs) -> Result<i32> {
    if !preflight::root("e2e", "network namespaces, XDP, nftables") {
        return Ok(1);
    }
    if args.rounds == 0 || args.duration <= args.warmup + 0.3 || args.forwarders.is_empty() || args.paths.is_empty() {
        bail!("--rounds must be positive, --duration at least --warmup + 0.3 s, --forwarders and --paths non-empty");
    }
    preflight::gen_and_fwd_cores(args.gen_core, args.fwd_core)?;
    let podswitch = preflight::program_beside(&args.podswitch, "podswitch")?;
    let pktgen = preflight::program_beside(&args.pktgen, "pktgen")?;
    preflight::built(&[(&podswitch, "podswitch", "podswitch-control"), (&pktgen, "pktgen", "podswitch-pktgen")])?;
    let mut need = vec!["ip", "taskset", "ethtool", "sysctl", "nft"];
    if args.forwarders.contains(&Fwd::Ovs) {
        need.extend(["ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl"]);
    }
    preflight::programs(&need, "scripts/bench.sh e2e installs them")?;
    let run = preflight::begin("e2e", "pse", topo::destroy)?;
    let (workdir, guard, start) = (run.workdir, run.guard.remove_also(SOCKET), run.start);

    progress(format!(
        "{} Services ({} endpoints each), {} policies over {} pods; {} round(s) of {} over {}; pktgen on core {}, forwarder on core {}",
        args.services,
        args.endpoints,
        args.policies,
        args.background_pods + 2,
        args.rounds,
        rounds::names(&args.forwarders),
        args.paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(", "),
        args.gen_core,
        args.fwd_core
    ));
    let cluster = Cluster::generate(args.services, args.endpoints, args.background_pods, args.policies);
    progress("creating namespaces pse-a, pse-b, pse-x, pse-node");
    let topo = Topo::create(args.fwd_core)?;
    let manifests = workdir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("cluster.yaml"), cluster.manifests_yaml())?;

    let (mut nft_load_s, mut nft_chains) = (0.0, 0);
    if args.forwarders.contains(&Fwd::Kernel) {
        let batches = nft::ruleset(&cluster, args.nft_batch);
        progress(format!("loading kube-proxy's nftables rules for {} Services into pse-node ({} transactions)", cluster.services.len(), batches.len()));
        let d = nft::load(NS_NODE, &batches, &workdir, |i, n| {
            if i % 4 == 0 || i == n {
                progress(format!("  nftables: {i}/{n} transactions"));
            }
        })?;
        nft_load_s = stats_round(d.as_secs_f64(), 1);
        nft_chains = nft::chain_count(NS_NODE)?;
        progress(format!("nftables: {nft_chains} chains loaded in {nft_load_s} s"));
    }

    let mut ctx = Ctx { args: &args, topo, podswitch, pktgen, workdir: workdir.clone(), manifests, notes: Vec::new(), switch_start_s: Vec::new() };
    let mut samples: Vec<Sample> = Vec::new();
    // A forwarder's turn measures every path: its samples go to `samples`, its failure (said
    // and noted by the rounds) to `failed`.
    let mut failed = Vec::new();
    let turns = rounds::rotated("e2e", args.rounds, &args.forwarders, &mut failed, |fwd, round, _| run_forwarder(&mut ctx, fwd, round, &mut samples));
    ctx.notes.extend(failed);
    if turns.interrupted {
        drop(ctx);
        return Ok(turns.take_down("e2e", guard).unwrap_or(130));
    }
    let setup = Setup {
        services: cluster.services.len(),
        endpoints: cluster.endpoint_count(),
        policies: args.policies,
        pods: args.background_pods + 2,
        nft_chains,
        nft_load_s,
        switch_start_s: ctx.switch_start_s.clone(),
        flows: args.flows,
        gen_core: args.gen_core,
        fwd_core: args.fwd_core,
        rounds: args.rounds,
        duration_s: args.duration,
        ndr_trial_s: args.ndr_trial,
        ndr_resolution: args.ndr_resolution,
        latency_rate: args.latency_rate,
        latency_duration_s: args.latency_duration,
    };
    let notes = std::mem::take(&mut ctx.notes);
    drop(ctx);
    drop(guard);
    let env = Env {
        host: start.host(),
        ovs_version: host::first_line_of(&["ovs-vswitchd", "--version"]),
        nft_version: host::first_line_of(&["nft", "--version"]),
    };
    let summary = report::summarize(&args, samples, setup, env, notes, start.utc.clone(), start.elapsed_s());
    crate::harness::report::publish(&args.output, &summary, || report::files(&summary), || report::table(&summary), progress)?;
    let complete = summary.headline_complete();
    Ok(if complete { 0 } else { 1 })
}

fn stats_round(x: f64, d: i32) -> f64 {
    crate::stats::round_to(x, d)
}

/// The traffic of `path` as forwarder `fwd` needs it addressed.
fn traffic(ctx: &Ctx, path: PathKind) -> Result<Traffic> {
    let t = &ctx.topo;
    let last = 1024 + ctx.args.flows - 1;
    let src_ports = format!("1024-{last}");
    let (tx_netns, dst_ip, dst_port, node_if) = match path {
        PathKind::PodPod => (topo::NS_A, t.b.ip.to_string(), objects::TARGET_PORT, t.a.node_if.as_str()),
        PathKind::PodSvc => (topo::NS_A, objects::SVC_IP.to_string(), objects::SVC_PORT, t.a.node_if.as_str()),
        PathKind::Nodeport => (topo::NS_X, objects::NODE_IP.to_string(), objects::NODE_PORT, UPLINK),
    };
    Ok(Traffic { tx_netns, rx_netns: topo::NS_B, dst_ip, dst_port, dst_mac: t.node_mac(node_if)?, src_ports })
}

/// The running forwarder of one round (stopped on drop).
enum Running {
    Switch(Proc),
    Kernel,
    Ovs(ovs::Ovs),
}

fn start_switch(ctx: &mut Ctx) -> Result<Proc> {
    std::fs::create_dir_all("/run/podswitch")?;
    podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
    let core = ctx.args.fwd_core.to_string();
    let x_mac = ctx.topo.x.mac.clone();
    let a: Vec<String> = [
        "ip", "netns", "exec", NS_NODE, "taskset", "-c", &core, ctx.podswitch.to_str().ok_or_else(|| anyhow!("podswitch path is not UTF-8"))?, "run",
        "--manifests", ctx.manifests.to_str().ok_or_else(|| anyhow!("work dir path is not UTF-8"))?, "--node-name", objects::NODE_NAME,
        "--control-socket", SOCKET, "--cores", &core, "--busy-poll", "--uplink", UPLINK, "--uplink-gateway-mac", &x_mac,
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    let t0 = Instant::now();
    let mut p = Proc::spawn("podswitch", &a, ctx.workdir.join("podswitch.log"))?;
    p.wait_for_log("podswitch running:", Duration::from_secs(120))?;
    ctx.switch_start_s.push(stats_round(t0.elapsed().as_secs_f64(), 2));
    Ok(p)
}

fn show(ctx: &Ctx, what: &str) -> Result<Value> {
    let out = sys::run(&[ctx.podswitch.to_str().unwrap_or("podswitch"), "show", what, "--json", "--socket", SOCKET])?;
    serde_json::from_str(&out).with_context(|| format!("`podswitch show {what} --json` gave no JSON"))
}

fn drops(v: &Value) -> Vec<(String, u64)> {
    v.get("drops")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| Some((d.get("reason")?.as_str()?.to_string(), d.get("count")?.as_u64()?)))
                .filter(|(_, c)| *c > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn run_forwarder(ctx: &mut Ctx, fwd: Fwd, round: u32, samples: &mut Vec<Sample>) -> Result<()> {
    let rounds = ctx.args.rounds;
    progress(format!("round {round}/{rounds} {}: starting", fwd.title()));
    let mut running = match fwd {
        Fwd::Switch => Running::Switch(start_switch(ctx)?),
        Fwd::Kernel => Running::Kernel,
        Fwd::Ovs => {
            let t = &ctx.topo;
            let gw_b = t.node_mac(&t.b.node_if)?;
            let r = ovs::Route { a_if: &t.a.node_if, b_if: &t.b.node_if, gw_mac_b: &gw_b, b_mac: &t.b.mac, b_ip: t.b.ip };
            Running::Ovs(ovs::Ovs::start(NS_NODE, &ctx.workdir.join("ovs"), ctx.args.fwd_core, &r)?)
        }
    };
    let cpu = match &running {
        Running::Switch(p) => CpuSource::Process(p.pid()),
        Running::Kernel => CpuSource::Softirq(ctx.args.fwd_core),
        Running::Ovs(o) => CpuSource::Process(o.vswitchd_pid().ok_or_else(|| anyhow!("ovs-vswitchd has no pid"))?),
    };
    let paths: Vec<PathKind> = ctx.args.paths.iter().copied().filter(|p| fwd != Fwd::Ovs || *p == PathKind::PodPod).collect();
    let mut res = Ok(());
    for path in paths {
        if let Running::Switch(p) = &mut running {
            if let Some(st) = p.exited() {
                res = Err(anyhow!("podswitch exited ({st}):\n    {}", p.log_tail(10)));
                break;
            }
        }
        let s = measure_path(ctx, fwd, path, round, cpu);
        match s {
            Ok(s) => samples.push(s),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    // Stop the forwarder; leave the node as it was for the next one.
    match &mut running {
        Running::Switch(p) => {
            if let Ok(st) = show(ctx, "stats") {
                let d = drops(&st);
                if !d.is_empty() {
                    let note = format!(
                        "round {round} switch: drops over its run: {}",
                        d.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                    );
                    progress(&note);
                    ctx.notes.push(note);
                }
            }
            let (st, killed) = p.stop(sys::Signal::SIGTERM, false, Duration::from_secs(15));
            if killed {
                ctx.notes.push(format!("round {round}: podswitch did not stop on SIGTERM and was killed"));
            } else if st.is_some_and(|s| !s.success()) {
                ctx.notes.push(format!("round {round}: podswitch exited with {}: {}", st.expect("checked"), p.log_tail(5)));
            }
            sys::run_quiet(&["ip", "-n", NS_NODE, "link", "del", "psw-host"]);
            podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
        }
        Running::Kernel => {}
        Running::Ovs(o) => {
            for p in o.stop() {
                ctx.notes.push(format!("round {round} ovs: {p}"));
            }
        }
    }
    drop(running);
    if ctx.topo.clear_xdp() {
        ctx.notes.push(format!("round {round} {}: left an XDP program on a node-side veth (detached)", fwd.name()));
    }
    res
}

fn measure_path(ctx: &mut Ctx, fwd: Fwd, path: PathKind, round: u32, cpu: CpuSource) -> Result<Sample> {
    let a = ctx.args;
    let t = traffic(ctx, path)?;
    let gen = Gen { pktgen: &ctx.pktgen, gen_core: a.gen_core, fwd_core: a.fwd_core, workdir: &ctx.workdir };
    let tag = format!("round {round}/{} {} {}", a.rounds, fwd.name(), path.name());
    let mut s = Sample { round, fwd, path, rate_64: None, rate_imix: None, ndr_64: None, latency_64: None, errors: Vec::new() };
    let fail = |s: &mut Sample, what: &str, e: anyhow::Error| -> Result<()> {
        s.errors.push(format!("{what}: {}", crate::harness::rounds::failed("e2e", &tag, what, e)?));
        Ok(())
    };
    match gen.rate(&t, "64", a.duration, a.warmup, cpu) {
        Ok(r) => {
            progress(format!(
                "{tag}: 64 B {} pps (offered {}, lost {}){}",
                crate::stats::thousands(r.pps),
                crate::stats::thousands(r.offered_pps),
                r.lost,
                r.cpu_ns_per_pkt.map(|n| format!(", {:.2} µs CPU/pkt", n / 1000.0)).unwrap_or_default()
            ));
            s.rate_64 = Some(r);
        }
        Err(e) => fail(&mut s, "64-byte rate", e)?,
    }
    match gen.rate(&t, "imix", a.duration, a.warmup, cpu) {
        Ok(r) => {
            progress(format!("{tag}: IMIX {} pps (offered {}, lost {})", crate::stats::thousands(r.pps), crate::stats::thousands(r.offered_pps), r.lost));
            s.rate_imix = Some(r);
        }
        Err(e) => fail(&mut s, "IMIX rate", e)?,
    }
    if a.ndr_trial > 0.0 {
        if let Some(r) = &s.rate_64 {
            let max = (r.offered_pps.max(r.pps) as f64 * 1.1) as u64;
            match gen.ndr(&t, "64", a.ndr_trial, max.max(20_000), (max / 20).max(1000), a.ndr_resolution, a.ndr_max_trials) {
                Ok(n) => {
                    progress(format!("{tag}: no-drop rate {} pps ({} trials)", n.ndr_pps.map_or("-".into(), crate::stats::thousands), n.trials));
                    s.ndr_64 = Some(n);
                }
                Err(e) => fail(&mut s, "no-drop search", e)?,
            }
        }
    }
    if a.latency_duration > 0.0 {
        match gen.latency(&t, "64", a.latency_rate, a.latency_duration) {
            Ok(l) => {
                progress(format!("{tag}: latency at {} pps p50 {:.1} µs p99 {:.1} µs (lost {})", a.latency_rate, l.p50_ns as f64 / 1e3, l.p99_ns as f64 / 1e3, l.lost));
                s.latency_64 = Some(l);
            }
            Err(e) => fail(&mut s, "latency", e)?,
        }
    }
    Ok(s)
}
