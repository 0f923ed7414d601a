//! `podswitch-perf forward`: 64-byte UDP frames per second from pod a to pod b through
//! (1) podswitch, (2) a Linux bridge and (3) dpdk-testpmd io-forwarding over its AF_XDP driver,
//! in one run with the same generator, rounds interleaved. See perf/README.md for the design.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::harness::cleanup::Cleanup;
use crate::harness::host::{Host, Stamp, Start};
use crate::harness::trafgen::{self, FIRST_SPORT, FRAME_BYTES};
pub use crate::harness::trafgen::Mode as GenMode;
use crate::harness::report::{self, OutputArgs};
use crate::harness::preflight;
use crate::harness::rounds::{self, Contender, Measured, Window};
use crate::lab::{self, Lab, NS_A, NS_B, NS_NODE};
use crate::stats::{self, opt_thousands, round_to, thousands};
use crate::sys::{self, nap, CoreTimes, Proc};

/// The generator's core: trafgen pins its (single) worker process to CPU 0 itself.
pub const GEN_CORE: usize = 0;
const SOCKET: &str = "/run/podswitch/psb-bench.sock";
const BRIDGE: &str = "psbr0";
/// testpmd's EAL file prefix (its run directory /var/run/dpdk/psb-bench is removed at the end).
const DPDK_PREFIX: &str = "psb-bench";
const TARGET_SWITCH_VS_TESTPMD: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Case {
    Switch,
    Bridge,
    Testpmd,
}

impl Contender for Case {
    fn name(self) -> &'static str {
        match self {
            Case::Switch => "switch",
            Case::Bridge => "bridge",
            Case::Testpmd => "testpmd",
        }
    }
}

/// Pod-to-pod forwarding rate: podswitch vs Linux bridge vs dpdk-testpmd (AF_XDP).
///
/// Every round runs each case once, in the order given by --cases.
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub window: Window,
    /// How trafgen sends.
    #[arg(long, value_enum, default_value_t = GenMode::Sendto)]
    pub gen_mode: GenMode,
    /// Number of UDP flows (source ports 1024..1024+N-1, cycled).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=64000))]
    pub flows: u32,
    /// Cases to run, in this order within each round.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Case::Switch, Case::Bridge, Case::Testpmd])]
    pub cases: Vec<Case>,
    /// Core of the forwarder (podswitch's worker, testpmd's forwarding lcore); the generator is on core 0.
    #[arg(long, default_value_t = 1)]
    pub fwd_core: usize,
    /// The podswitch binary (default: `podswitch` next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchDiag {
    /// Frames the XDP program on pod a's port redirected to the switch's socket.
    pub xdp_redirected: u64,
    /// Frames the switch read from pod a's port in the window (redirected minus these were lost
    /// in the kernel: socket RX ring full or no free frame in the fill ring).
    pub rx_packets: u64,
    /// Frames from pod a's port that the pipeline dropped (any reason but tx_ring_full).
    pub rx_dropped: u64,
    /// Frames sent on pod b's port.
    pub tx_packets: u64,
    pub tx_dropped: u64,
    /// sendto() kicks on pod b's port.
    pub tx_kicks: u64,
    pub packets_per_kick: Option<f64>,
    /// Drop reasons that counted in the window.
    pub drops: BTreeMap<String, u64>,
    pub idle_sleeps: u64,
    pub worker_rounds: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub case: Case,
    /// Frames per second arriving at pod b's eth0.
    pub pps: u64,
    /// Frames per second leaving pod a's eth0 (what the generator got out).
    pub offered_pps: u64,
    pub window_s: f64,
    /// CPU time of the forwarder process (all threads) per forwarded frame, ns.
    pub fwd_cpu_ns_per_pkt: Option<f64>,
    /// Share of one core the forwarder process used.
    pub fwd_cpu_util: Option<f64>,
    /// Per core: share of the window busy, in user space, and in softirq.
    pub core_busy: Vec<f64>,
    pub core_user: Vec<f64>,
    pub core_softirq: Vec<f64>,
    /// XDP attachment of the host-side veths of a and b.
    pub xdp: [String; 2],
    /// Frames trafgen reports sent over its whole run (warm-up included).
    pub gen_sent: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchDiag>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseError {
    pub round: u32,
    pub case: Case,
    pub error: String,
}

impl CaseError {
    fn shown(&self) -> rounds::FailureRef<'_> {
        (self.round, self.case.name(), &self.error)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseSummary {
    pub case: Case,
    #[serde(flatten)]
    pub rates: stats::Rates,
    pub median_offered_pps: Option<u64>,
    pub median_fwd_cpu_ns_per_pkt: Option<f64>,
}

/// The result. Field order is the JSON key order: the three medians come first.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub switch_pps: Option<u64>,
    pub bridge_pps: Option<u64>,
    pub testpmd_pps: Option<u64>,
    pub switch_vs_testpmd: Option<f64>,
    pub switch_vs_bridge: Option<f64>,
    /// switch/testpmd of each round (same round, so slow drifts of the machine cancel out).
    pub switch_vs_testpmd_per_round: Vec<f64>,
    pub target_switch_vs_testpmd: f64,
    pub target_met: Option<bool>,
    pub rounds: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub frame_bytes: usize,
    pub frame_bytes_with_fcs: usize,
    pub generator: String,
    pub gen_mode: &'static str,
    pub gen_core: usize,
    pub fwd_core: usize,
    pub flows: u32,
    pub cases: Vec<CaseSummary>,
    pub samples: Vec<Sample>,
    pub errors: Vec<CaseError>,
    pub notes: Vec<String>,
    pub host: Host,
    #[serde(flatten)]
    pub stamp: Stamp,
}

fn progress(msg: impl AsRef<str>) {
    crate::harness::progress::say("forward", msg);
}

struct Ctx<'a> {
    args: &'a ForwardArgs,
    lab: Lab,
    podswitch: PathBuf,
    workdir: PathBuf,
    manifests: PathBuf,
    notes: Vec<String>,
}

pub fn main(args: ForwardArgs) -> Result<i32> {
    if !preflight::root("forward", "it creates network namespaces and attaches XDP programs") {
        return Ok(1);
    }
    if args.window.rounds == 0 || args.window.duration <= 0.0 || args.window.warmup < 0.0 || args.cases.is_empty() {
        bail!("--rounds, --duration and --cases must be positive / non-empty");
    }
    let cpus = sys::online_cpus();
    if args.fwd_core == GEN_CORE || args.fwd_core >= cpus {
        bail!("--fwd-core must be a core other than {GEN_CORE} (the generator's) among the {cpus} online");
    }
    let podswitch = preflight::program_beside(&args.podswitch, "podswitch")?;
    let mut need = vec!["ip", "trafgen", "taskset", "ethtool", "sysctl"];
    if args.cases.contains(&Case::Testpmd) {
        need.extend(["dpdk-testpmd", "stdbuf"]);
    }
    preflight::programs(&need, "scripts/bench.sh installs them")?;
    if args.cases.contains(&Case::Switch) && !podswitch.is_file() {
        bail!("no podswitch binary at {} (build it: cargo build --release -p podswitch-control)", podswitch.display());
    }
    let _lock = sys::lock_file("/run/psb-bench.lock")?;
    // Namespaces, processes, work directory, socket and testpmd's run directory go however the
    // run ends.
    let workdir = std::env::temp_dir().join(format!("psb-bench-{}", std::process::id()));
    let guard = Cleanup::install(workdir.clone(), lab::destroy)?
        .remove_also(SOCKET)
        .remove_also(Path::new("/var/run/dpdk").join(DPDK_PREFIX));

    let start = Start::now();
    progress(format!(
        "{} round(s) x {} s (+{} s warm-up) of {}; trafgen {} on core {GEN_CORE}, forwarder on core {}",
        args.window.rounds,
        args.window.duration,
        args.window.warmup,
        args.cases.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
        args.gen_mode.name(),
        args.fwd_core
    ));
    progress("creating namespaces psb-a, psb-b, psb-node");
    let lab = Lab::create()?;
    let manifests = workdir.join("manifests");
    lab.write_manifests(&manifests)?;
    let mut ctx = Ctx { args: &args, lab, podswitch, workdir: workdir.clone(), manifests, notes: Vec::new() };

    let done = rounds::run("forward", args.window.rounds, |_| args.cases.clone(), |case, round| run_case(&mut ctx, case, round));
    if done.interrupted {
        drop(guard);
        return Ok(130);
    }
    let samples = done.samples;
    let errors = done.failures.into_iter().map(|(round, case, error)| CaseError { round, case, error }).collect();
    let notes = std::mem::take(&mut ctx.notes);
    drop(ctx);
    drop(guard);

    let summary = summarize(&args, samples, errors, notes, &start, start.elapsed_s());
    report::publish(
        &args.output,
        &summary,
        || Ok(vec![("forward.json", report::json(&summary)?), ("forward.md", markdown(&summary))]),
        || table(&summary),
        progress,
    )?;
    let incomplete = summary.cases.iter().any(|c| c.rates.rounds_ok == 0);
    Ok(if summary.errors.is_empty() && !incomplete { 0 } else { 1 })
}

impl Measured for Sample {
    fn rates(&self) -> (u64, u64) {
        (self.pps, self.offered_pps)
    }
    fn note(&self) -> String {
        self.fwd_cpu_ns_per_pkt.map(|n| format!(", forwarder {n:.0} ns CPU/frame")).unwrap_or_default()
    }
}

/// Processes of one case, stopped politely whatever happens.
#[derive(Default)]
struct CaseProcs {
    fwd: Option<Proc>,
    gen: Option<Proc>,
}

fn run_case(ctx: &mut Ctx, case: Case, round: u32) -> Result<Sample> {
    let mut procs = CaseProcs::default();
    let res = measure(ctx, case, round, &mut procs);
    let mut problems = Vec::new();
    if let Some(g) = procs.gen.as_mut() {
        let (_, killed) = g.stop(sys::Signal::SIGINT, true, Duration::from_secs(5));
        if killed {
            problems.push("trafgen did not stop on SIGINT and was killed".to_string());
        }
    }
    let gen_sent = procs.gen.as_ref().and_then(|g| trafgen::parse_sent(&g.log_text()));
    if let Some(f) = procs.fwd.as_mut() {
        let sig = if case == Case::Switch { sys::Signal::SIGTERM } else { sys::Signal::SIGINT };
        let (st, killed) = f.stop(sig, false, Duration::from_secs(15));
        if killed {
            problems.push(format!("{} did not stop and was killed", f.name));
        } else if case == Case::Switch && st.is_some_and(|s| !s.success()) {
            problems.push(format!("podswitch exited with {}:\n    {}", st.expect("checked"), f.log_tail(8)));
        }
    }
    drop(procs);
    // Leave psb-node as it was for the next case.
    sys::run_quiet(&["ip", "-n", NS_NODE, "link", "del", BRIDGE]);
    sys::run_quiet(&["ip", "-n", NS_NODE, "link", "del", "psw-host"]);
    podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
    if ctx.lab.clear_xdp() {
        problems.push(format!("{} left an XDP program on a host-side veth (detached)", case.name()));
    }
    let mut s = res?;
    s.gen_sent = gen_sent;
    for p in problems {
        let note = format!("round {round} {}: {p}", case.name());
        progress(&note);
        ctx.notes.push(note);
    }
    Ok(s)
}

/// Watches the processes for `d`: an early exit of either is an error.
fn watch(procs: &mut CaseProcs, d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        nap((end - Instant::now()).min(Duration::from_millis(100)))?;
        for p in [procs.gen.as_mut(), procs.fwd.as_mut()].into_iter().flatten() {
            if let Some(st) = p.exited() {
                bail!("{} exited early ({st}):\n    {}", p.name, p.log_tail(10));
            }
        }
    }
    Ok(())
}

struct Snap {
    t: Instant,
    b_rx: u64,
    a_tx: u64,
    cores: CoreTimes,
    fwd_cpu: Option<u64>,
    sw: Option<(Value, Value)>,
}

fn snap(ctx: &Ctx, procs: &CaseProcs, switch: bool, sw_first: bool) -> Result<Snap> {
    let sw_stats = || -> Result<(Value, Value)> { Ok((show(ctx, "ports")?, show(ctx, "stats")?)) };
    let sw_before = if switch && sw_first { Some(sw_stats()?) } else { None };
    let t0 = Instant::now();
    let b_rx = sys::ns_read_u64(NS_B, "/sys/class/net/eth0/statistics/rx_packets")?;
    let t1 = Instant::now();
    let cores = CoreTimes::read();
    let fwd_cpu = procs.fwd.as_ref().and_then(|p| sys::process_cpu_ns(p.pid()));
    let a_tx = sys::ns_read_u64(NS_A, "/sys/class/net/eth0/statistics/tx_packets")?;
    let sw = if switch && !sw_first { Some(sw_stats()?) } else { sw_before };
    Ok(Snap { t: t0 + (t1 - t0) / 2, b_rx, a_tx, cores, fwd_cpu, sw })
}

fn show(ctx: &Ctx, what: &str) -> Result<Value> {
    let out = sys::run(&[ctx.podswitch.to_str().unwrap_or("podswitch"), "show", what, "--json", "--socket", SOCKET])?;
    serde_json::from_str(&out).with_context(|| format!("`podswitch show {what} --json` gave no JSON: {out}"))
}

fn measure(ctx: &mut Ctx, case: Case, round: u32, procs: &mut CaseProcs) -> Result<Sample> {
    let args = ctx.args;
    // 1. The forwarder.
    match case {
        Case::Switch => procs.fwd = Some(start_switch(ctx)?),
        Case::Bridge => start_bridge(ctx)?,
        Case::Testpmd => procs.fwd = Some(start_testpmd(ctx)?),
    }
    // 2. The generator, with frames addressed as this forwarder needs them.
    let dst_mac = match case {
        Case::Switch => ctx.lab.host_mac(&ctx.lab.a)?,
        Case::Bridge | Case::Testpmd => ctx.lab.b.mac.clone(),
    };
    let cfg = ctx.workdir.join(format!("trafgen-{}.cfg", case.name()));
    std::fs::write(&cfg, trafgen_config(&dst_mac, &ctx.lab, args.flows))?;
    let mut gen_args: Vec<String> = ["ip", "netns", "exec", NS_A, "taskset", "-c", &GEN_CORE.to_string(), "trafgen"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    gen_args.extend(trafgen::args(&cfg, args.gen_mode));
    let log = ctx.workdir.join(format!("trafgen-r{round}-{}.log", case.name()));
    procs.gen = Some(Proc::spawn("trafgen", &gen_args, log)?);
    // 3. Warm-up, then the window.
    watch(procs, Duration::from_secs_f64(args.window.warmup))?;
    let switch = case == Case::Switch;
    let s0 = snap(ctx, procs, switch, true)?;
    watch(procs, Duration::from_secs_f64(args.window.duration))?;
    let s1 = snap(ctx, procs, switch, false)?;
    let xdp = [ctx.lab.xdp_mode(&ctx.lab.a), ctx.lab.xdp_mode(&ctx.lab.b)];

    let window = (s1.t - s0.t).as_secs_f64();
    let rx = s1.b_rx.saturating_sub(s0.b_rx);
    let tx = s1.a_tx.saturating_sub(s0.a_tx);
    let fwd_ns = match (s0.fwd_cpu, s1.fwd_cpu) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let fr = s0.cores.shares(&s1.cores);
    Ok(Sample {
        round,
        case,
        pps: (rx as f64 / window).round() as u64,
        offered_pps: (tx as f64 / window).round() as u64,
        window_s: round_to(window, 4),
        fwd_cpu_ns_per_pkt: fwd_ns.filter(|_| rx > 0).map(|n| round_to(n as f64 / rx as f64, 1)),
        fwd_cpu_util: fwd_ns.map(|n| round_to(n as f64 / (window * 1e9), 3)),
        core_busy: fr.iter().map(|f| round_to(f.busy, 3)).collect(),
        core_user: fr.iter().map(|f| round_to(f.user, 3)).collect(),
        core_softirq: fr.iter().map(|f| round_to(f.softirq, 3)).collect(),
        xdp,
        gen_sent: None,
        switch: match (&s0.sw, &s1.sw) {
            (Some(a), Some(b)) => Some(switch_diag(&ctx.lab, a, b)),
            _ => None,
        },
    })
}

/// trafgen's frames from pod a to pod b, addressed to `dst_mac` (the next hop's).
fn trafgen_config(dst_mac: &str, lab: &Lab, flows: u32) -> String {
    let f = trafgen::Frames { src_mac: &lab.a.mac, dst_mac, src_ip: &lab.a.ip, dst_ip: &lab.b.ip, flows };
    trafgen::config("forward", &f)
}

fn start_switch(ctx: &mut Ctx) -> Result<Proc> {
    std::fs::create_dir_all("/run/podswitch")?;
    podswitch_control::naming::remove_switch_files(std::path::Path::new(SOCKET));
    let core = ctx.args.fwd_core.to_string();
    let a = [
        "ip",
        "netns",
        "exec",
        NS_NODE,
        "taskset",
        "-c",
        &core,
        ctx.podswitch.to_str().ok_or_else(|| anyhow!("podswitch path is not UTF-8"))?,
        "run",
        "--manifests",
        ctx.manifests.to_str().ok_or_else(|| anyhow!("work dir path is not UTF-8"))?,
        "--control-socket",
        SOCKET,
        "--cores",
        &core,
        "--busy-poll",
    ];
    let mut p = Proc::spawn("podswitch", &a, ctx.workdir.join("podswitch.log"))?;
    p.wait_for_log("podswitch running:", Duration::from_secs(30))?;
    let ports: Vec<String> = p.log_text().lines().filter(|l| l.starts_with("port ")).map(String::from).collect();
    for l in ports {
        let note = format!("podswitch: {l}");
        if !ctx.notes.contains(&note) {
            ctx.notes.push(note);
        }
    }
    Ok(p)
}

fn start_bridge(ctx: &Ctx) -> Result<()> {
    let n = ["ip", "-n", NS_NODE];
    sys::run(&[&n[..], &["link", "add", BRIDGE, "type", "bridge"]].concat())?;
    let _ = sys::run(&["ip", "netns", "exec", NS_NODE, "sysctl", "-qw", &format!("net.ipv6.conf.{BRIDGE}.disable_ipv6=1")]);
    for p in [&ctx.lab.a, &ctx.lab.b] {
        sys::run(&[&n[..], &["link", "set", &p.host_if, "master", BRIDGE]].concat())?;
    }
    sys::run(&[&n[..], &["link", "set", BRIDGE, "up"]].concat())?;
    nap(Duration::from_millis(300))
}

fn start_testpmd(ctx: &mut Ctx) -> Result<Proc> {
    let lcores = format!("{GEN_CORE},{}", ctx.args.fwd_core);
    let main = GEN_CORE.to_string();
    let va = format!("net_af_xdp0,iface={}", ctx.lab.a.host_if);
    let vb = format!("net_af_xdp1,iface={}", ctx.lab.b.host_if);
    let a = [
        "ip",
        "netns",
        "exec",
        NS_NODE,
        "stdbuf",
        "-oL",
        "-eL",
        "dpdk-testpmd",
        "--no-pci",
        "--no-huge",
        "--no-shconf",
        "--file-prefix",
        DPDK_PREFIX,
        "--no-telemetry",
        "-m",
        "1024",
        "-l",
        &lcores,
        "--main-lcore",
        &main,
        "--vdev",
        &va,
        "--vdev",
        &vb,
        "--",
        "--forward-mode=io",
        "--total-num-mbufs=16384",
        "-a",
        "--stats-period",
        "3600",
    ];
    let mut p = Proc::spawn("dpdk-testpmd", &a, ctx.workdir.join("testpmd.log"))?;
    p.wait_for_log("packet forwarding - ports=", Duration::from_secs(30))?;
    Ok(p)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn port<'a>(ports: &'a Value, ifname: &str) -> Option<&'a Value> {
    ports.get("ports")?.as_array()?.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(ifname))
}

fn switch_diag(lab: &Lab, before: &(Value, Value), after: &(Value, Value)) -> SwitchDiag {
    let d = |which: &str, k: &str| -> u64 {
        let a = port(&before.0, which).map_or(0, |p| u(p, k));
        let b = port(&after.0, which).map_or(0, |p| u(p, k));
        b.saturating_sub(a)
    };
    let drops_of = |s: &Value| -> BTreeMap<String, u64> {
        s.get("drops")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| Some((d.get("reason")?.as_str()?.to_string(), d.get("count")?.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let workers = |s: &Value, k: &str| -> u64 {
        s.get("workers").and_then(Value::as_array).map_or(0, |a| a.iter().map(|w| u(w, k)).sum())
    };
    let (d0, d1) = (drops_of(&before.1), drops_of(&after.1));
    let drops = d1
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*d0.get(k).unwrap_or(&0))))
        .filter(|(_, v)| *v > 0)
        .collect();
    let tx_packets = d(&lab.b.host_if, "tx_packets");
    let tx_kicks = d(&lab.b.host_if, "tx_kicks");
    SwitchDiag {
        xdp_redirected: d(&lab.a.host_if, "xdp_redirected"),
        rx_packets: d(&lab.a.host_if, "rx_packets"),
        rx_dropped: d(&lab.a.host_if, "rx_dropped"),
        tx_packets,
        tx_dropped: d(&lab.b.host_if, "tx_dropped"),
        tx_kicks,
        packets_per_kick: (tx_kicks > 0).then(|| round_to(tx_packets as f64 / tx_kicks as f64, 1)),
        drops,
        idle_sleeps: workers(&after.1, "idle_sleeps").saturating_sub(workers(&before.1, "idle_sleeps")),
        worker_rounds: workers(&after.1, "rounds").saturating_sub(workers(&before.1, "rounds")),
    }
}

fn summarize(
    args: &ForwardArgs,
    samples: Vec<Sample>,
    errors: Vec<CaseError>,
    notes: Vec<String>,
    start: &Start,
    elapsed: f64,
) -> Summary {
    let cases: Vec<CaseSummary> = args
        .cases
        .iter()
        .map(|&c| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.case == c).collect();
            let offered: Vec<f64> = mine.iter().map(|s| s.offered_pps as f64).collect();
            let cpu: Vec<f64> = mine.iter().filter_map(|s| s.fwd_cpu_ns_per_pkt).collect();
            CaseSummary {
                case: c,
                rates: stats::Rates::of(mine.iter().map(|s| s.pps).collect()),
                median_offered_pps: stats::median(&offered).map(|x| x.round() as u64),
                median_fwd_cpu_ns_per_pkt: stats::median(&cpu).map(|x| round_to(x, 1)),
            }
        })
        .collect();
    let med = |c: Case| cases.iter().find(|s| s.case == c).and_then(|s| s.rates.median_pps);
    let ratio = stats::ratio;
    let (sw, br, tp) = (med(Case::Switch), med(Case::Bridge), med(Case::Testpmd));
    let switch_vs_testpmd = ratio(sw, tp);
    let per_round = (1..=args.window.rounds)
        .filter_map(|r| {
            let p = |c: Case| samples.iter().find(|s| s.round == r && s.case == c).map(|s| s.pps);
            ratio(p(Case::Switch), p(Case::Testpmd))
        })
        .collect();
    let stamp = Stamp::new(start.utc.clone(), elapsed);
    Summary {
        switch_pps: sw,
        bridge_pps: br,
        testpmd_pps: tp,
        switch_vs_testpmd,
        switch_vs_bridge: ratio(sw, br),
        switch_vs_testpmd_per_round: per_round,
        target_switch_vs_testpmd: TARGET_SWITCH_VS_TESTPMD,
        target_met: switch_vs_testpmd.map(|r| r >= TARGET_SWITCH_VS_TESTPMD),
        rounds: args.window.rounds,
        duration_s: args.window.duration,
        warmup_s: args.window.warmup,
        frame_bytes: FRAME_BYTES,
        frame_bytes_with_fcs: FRAME_BYTES + 4,
        generator: format!(
            "trafgen -P 1 {}on core {GEN_CORE} in psb-a, UDP 10.244.0.10:{FIRST_SPORT}-{} -> 10.244.0.11:9",
            if args.gen_mode == GenMode::Sendto { "-t 0 " } else { "" },
            FIRST_SPORT + args.flows - 1
        ),
        gen_mode: args.gen_mode.name(),
        gen_core: GEN_CORE,
        fwd_core: args.fwd_core,
        flows: args.flows,
        cases,
        samples,
        errors,
        notes,
        host: start.host(),
        stamp,
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn case_row(c: &CaseSummary) -> [String; 7] {
    [
        c.case.name().to_string(),
        opt_thousands(c.rates.median_pps),
        opt_thousands(c.rates.min_pps),
        opt_thousands(c.rates.max_pps),
        opt_thousands(c.median_offered_pps),
        c.median_fwd_cpu_ns_per_pkt.map_or_else(|| "-".into(), |n| format!("{n:.0} ns")),
        c.rates.per_round_pps.iter().map(|&p| thousands(p)).collect::<Vec<_>>().join(" / "),
    ]
}

fn ratio_lines(s: &Summary) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(r) = s.switch_vs_testpmd {
        v.push(format!(
            "switch/testpmd = {r:.3}  (target >= {:.2}: {})",
            s.target_switch_vs_testpmd,
            if r >= s.target_switch_vs_testpmd { "met" } else { "NOT met" }
        ));
    }
    if !s.switch_vs_testpmd_per_round.is_empty() {
        let r: Vec<String> = s.switch_vs_testpmd_per_round.iter().map(|r| format!("{r:.3}")).collect();
        v.push(format!("switch/testpmd per round = {}", r.join(", ")));
    }
    if let Some(r) = s.switch_vs_bridge {
        v.push(format!("switch/bridge  = {r:.3}"));
    }
    v
}

/// The readable report.
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "\nforward: {}-byte UDP frames (60 + FCS) pod a -> pod b; {} round(s) x {} s after {} s warm-up, interleaved\n",
        s.frame_bytes_with_fcs, s.rounds, s.duration_s, s.warmup_s
    ));
    o.push_str(&format!("generator: {} ({} mode); forwarder on core {}\n\n", s.generator, s.gen_mode, s.fwd_core));
    let head = ["case", "median pps", "min pps", "max pps", "offered pps", "fwd CPU/frame", "per round (pps)"];
    let rows: Vec<[String; 7]> = s.cases.iter().map(case_row).collect();
    o.push_str(&report::padded(&head, &rows, &[0, 6]));
    o.push('\n');
    for l in ratio_lines(s) {
        o.push_str(&l);
        o.push('\n');
    }
    let sw: Vec<&Sample> = s.samples.iter().filter(|x| x.switch.is_some()).collect();
    if !sw.is_empty() {
        o.push_str("\nswitch per round: ");
        let parts: Vec<String> = sw
            .iter()
            .map(|x| {
                let d = x.switch.as_ref().expect("filtered");
                format!(
                    "r{}: redirected {} read {} sent {} tx_ring_full {} frames/kick {} idle_sleeps {}",
                    x.round,
                    thousands(d.xdp_redirected),
                    thousands(d.rx_packets),
                    thousands(d.tx_packets),
                    thousands(*d.drops.get("tx_ring_full").unwrap_or(&0)),
                    d.packets_per_kick.map_or_else(|| "-".into(), |k| format!("{k:.1}")),
                    d.idle_sleeps
                )
            })
            .collect();
        o.push_str(&parts.join("\n                  "));
        o.push('\n');
    }
    o.push_str("\ncore load in the window (busy / user space / softirq), per case, median round:\n");
    for c in &s.cases {
        let mine: Vec<&Sample> = s.samples.iter().filter(|x| x.case == c.case).collect();
        if let Some(m) = mine.iter().find(|x| Some(x.pps) == c.rates.median_pps).or(mine.first()) {
            let cores: Vec<String> = (0..m.core_busy.len())
                .map(|i| format!("core {i} {} / {} / {}", pct(m.core_busy[i]), pct(m.core_user[i]), pct(m.core_softirq[i])))
                .collect();
            o.push_str(&format!("  {:<8} {}\n", c.case.name(), cores.join(", ")));
        }
    }
    o.push_str(&rounds::failure_lines(s.errors.iter().map(CaseError::shown)));
    if !s.notes.is_empty() {
        o.push_str("\nnotes:\n");
        for n in &s.notes {
            o.push_str(&format!("  {n}\n"));
        }
    }
    o
}

fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str("# Forward benchmark: last result\n\n");
    o.push_str("Written by `scripts/bench.sh forward` (see perf/README.md for how it is measured).\n\n");
    o.push_str(&format!(
        "- Run: {}, git {}, kernel {}, {} ({} CPUs), load average {} at start / {} at end\n",
        s.stamp.started_utc,
        s.stamp.git.as_deref().unwrap_or("?"),
        s.host.kernel,
        s.host.cpu,
        s.host.online_cpus,
        s.host.loadavg_start,
        s.host.loadavg_end
    ));
    o.push_str(&format!(
        "- Frames: {} bytes + FCS = {} on the wire; {} UDP flows\n- Generator: {} ({} mode)\n- Forwarder core: {}; {} round(s) x {} s after {} s warm-up, cases interleaved\n\n",
        s.frame_bytes, s.frame_bytes_with_fcs, s.flows, s.generator, s.gen_mode, s.fwd_core, s.rounds, s.duration_s, s.warmup_s
    ));
    let head = ["case", "median pps", "min pps", "max pps", "offered pps", "forwarder CPU/frame", "per round (pps)"];
    let rows: Vec<[String; 7]> = s.cases.iter().map(case_row).collect();
    o.push_str(&report::markdown_table(&head, &rows, &[0, 6]));
    o.push('\n');
    o.push_str(&report::section("", "- ", ratio_lines(s)));
    o.push_str("\n## Per round\n\n");
    let head = ["round", "case", "pps", "offered pps", "forwarder CPU/frame", "forwarder CPU use", "busy (core 0 / 1)", "user space (0 / 1)", "softirq (0 / 1)", "XDP (a, b)"];
    let per_round = |x: &Sample| {
        [
            x.round.to_string(),
            x.case.name().to_string(),
            thousands(x.pps),
            thousands(x.offered_pps),
            x.fwd_cpu_ns_per_pkt.map_or_else(|| "-".into(), |n| format!("{n:.0} ns")),
            x.fwd_cpu_util.map_or_else(|| "-".into(), pct),
            x.core_busy.iter().map(|b| pct(*b)).collect::<Vec<_>>().join(" / "),
            x.core_user.iter().map(|b| pct(*b)).collect::<Vec<_>>().join(" / "),
            x.core_softirq.iter().map(|b| pct(*b)).collect::<Vec<_>>().join(" / "),
            format!("{}, {}", x.xdp[0], x.xdp[1]),
        ]
    };
    o.push_str(&report::markdown_table(&head, &s.samples.iter().map(per_round).collect::<Vec<_>>(), &[1, 6, 7, 8, 9]));
    let sw: Vec<[String; 8]> = s
        .samples
        .iter()
        .filter_map(|x| {
            let d = x.switch.as_ref()?;
            Some([
                x.round.to_string(),
                thousands(d.xdp_redirected),
                thousands(d.rx_packets),
                thousands(d.tx_packets),
                thousands(d.tx_kicks),
                d.packets_per_kick.map_or_else(|| "-".into(), |k| format!("{k:.1}")),
                if d.drops.is_empty() {
                    "-".to_string()
                } else {
                    d.drops.iter().map(|(k, v)| format!("{k} {}", thousands(*v))).collect::<Vec<_>>().join(", ")
                },
                d.idle_sleeps.to_string(),
            ])
        })
        .collect();
    if !sw.is_empty() {
        o.push_str("\n## Switch counters in the window\n\n");
        let head = ["round", "XDP redirected (port a)", "read by the switch", "tx (port b)", "tx kicks", "frames/kick", "drops by reason", "idle sleeps"];
        o.push_str(&report::markdown_table(&head, &sw, &[6]));
    }
    o.push_str(&rounds::failure_section(s.errors.iter().map(CaseError::shown)));
    o.push_str(&report::section("\n## Notes\n\n", "- ", &s.notes));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_60_bytes() {
        let (a, b) = Lab::pods();
        let lab = Lab { a, b };
        let cfg = trafgen_config("02:00:00:00:00:01", &lab, 256);
        assert!(cfg.contains("fill(0x00, 18)"));
        assert!(cfg.contains("dinc(1024, 1279)"));
        assert!(cfg.contains("sa=10.244.0.10"));
    }
}
