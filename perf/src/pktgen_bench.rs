//! `podswitch-perf pktgen`: 64-byte frames per second that pktgen (AF_XDP) and trafgen
//! (netsniff-ng) get out of one core and one interface, side by side in one run, rounds
//! interleaved. See perf/README.md ("pktgen") for the design.
//!
//! Topology: namespaces `psg-a` and `psg-b` joined by a veth pair (`eth0` in both, TX
//! checksum offload off, IPv6 off), made here and removed at the end whatever happens. The
//! generator runs in psg-a pinned to one core; the rate is the delta of `rx_packets` of psg-b's
//! `eth0` over the window.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::harness::cleanup::Cleanup;
use crate::harness::host::{loadavg, utc_now, Stamp};
use crate::harness::trafgen::{self, FIRST_SPORT, FRAME_BYTES};
pub use crate::harness::trafgen::Mode as TrafgenMode;
use crate::harness::report::{self, OutputArgs};
use crate::harness::preflight;
use crate::harness::rounds::{self, Contender, Measured, Window};
use crate::stats::{self, opt_thousands, round_to, thousands};
use crate::sys::{self, nap, run, CoreTimes, Proc};

const NS_A: &str = "psg-a";
const NS_B: &str = "psg-b";
const MAC_A: &str = "02:50:47:00:00:01";
const MAC_B: &str = "02:50:47:00:00:02";
/// Not psg-b's: frames to it are dropped on arrival (`--sink drop`).
const MAC_OTHER: &str = "02:50:47:00:00:99";
const IP_A: &str = "10.99.0.1";
const IP_B: &str = "10.99.0.2";
/// Frame size without FCS (64 bytes on the wire with it).

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gen {
    Pktgen,
    Trafgen,
}

impl Contender for Gen {
    fn name(self) -> &'static str {
        match self {
            Gen::Pktgen => "pktgen",
            Gen::Trafgen => "trafgen",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sink {
    /// Frames to psg-b's MAC and address: its stack receives them (UDP port 9, nobody
    /// listens: rate-limited ICMP port unreachable).
    Stack,
    /// Frames to another MAC: psg-b drops them as soon as they arrive (PACKET_OTHERHOST), so
    /// the window measures the generator and the veth, not psg-b's stack.
    Drop,
}

impl Sink {
    fn name(self) -> &'static str {
        match self {
            Sink::Stack => "stack",
            Sink::Drop => "drop",
        }
    }
}

/// pktgen vs trafgen: 64-byte frames per second from one core on one veth.
///
/// Every round runs both generators, the first of them alternating by round.
#[derive(Debug, clap::Args)]
pub struct PktgenArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub window: Window,
    /// How trafgen sends (the forward benchmark's default is sendto).
    #[arg(long, value_enum, default_value_t = TrafgenMode::Sendto)]
    pub trafgen_mode: TrafgenMode,
    /// What happens to the frames in psg-b.
    #[arg(long, value_enum, default_value_t = Sink::Stack)]
    pub sink: Sink,
    /// UDP flows (source ports 1024..1024+N-1, cycled), for both generators.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=64000))]
    pub flows: u32,
    /// The core both generators run on.
    #[arg(long, default_value_t = 0)]
    pub core: usize,
    /// Extra arguments for `pktgen send` (e.g. "--tx-budget 0").
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub pktgen_args: Option<String>,
    /// The pktgen binary (default: `pktgen` next to this program).
    #[arg(long, value_name = "PATH")]
    pub pktgen: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub generator: Gen,
    /// Frames per second arriving at psg-b's eth0.
    pub pps: u64,
    /// Frames per second leaving psg-a's eth0.
    pub offered_pps: u64,
    pub window_s: f64,
    /// CPU time of the generator (all its threads and processes) per frame received, ns.
    pub cpu_ns_per_frame: Option<f64>,
    /// Share of the generator's core busy, and in softirq, over the window.
    pub core_busy: Option<f64>,
    pub core_softirq: Option<f64>,
    /// What the generator itself reported (pktgen: its JSON summary's `tx`; trafgen: frames).
    pub reported: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GenSummary {
    pub generator: Gen,
    #[serde(flatten)]
    pub rates: stats::Rates,
    pub median_cpu_ns_per_frame: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundError {
    pub round: u32,
    pub generator: Gen,
    pub error: String,
}

impl RoundError {
    fn shown(&self) -> rounds::FailureRef<'_> {
        (self.round, self.generator.name(), &self.error)
    }
}

/// The result; the first two keys are the medians.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub pktgen_pps: Option<u64>,
    pub trafgen_pps: Option<u64>,
    pub pktgen_vs_trafgen: Option<f64>,
    pub pktgen_vs_trafgen_per_round: Vec<f64>,
    pub trafgen_mode: &'static str,
    pub pktgen_port: Option<String>,
    pub sink: &'static str,
    pub core: usize,
    pub rounds: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub frame_bytes: usize,
    pub frame_bytes_with_fcs: usize,
    pub flows: u32,
    pub generators: Vec<GenSummary>,
    pub samples: Vec<Sample>,
    pub errors: Vec<RoundError>,
    pub kernel: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    #[serde(flatten)]
    pub stamp: Stamp,
}

fn progress(msg: impl AsRef<str>) {
    crate::harness::progress::say("pktgen", msg);
}

/// Ends every process inside psg-a and psg-b and deletes both namespaces. Idempotent.
fn destroy() {
    crate::lab::destroy_namespaces(&[NS_A, NS_B]);
}

fn create() -> Result<()> {
    destroy();
    for ns in [NS_A, NS_B] {
        run(&["ip", "netns", "add", ns])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        run(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
    }
    run(&["ip", "-n", NS_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", NS_B])?;
    for (ns, mac, ip) in [(NS_A, MAC_A, IP_A), (NS_B, MAC_B, IP_B)] {
        run(&["ip", "-n", ns, "link", "set", "eth0", "address", mac])?;
        run(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        run(&["ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off"])?;
        run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
    }
    // The generators are given the MAC; no ARP needed. Wait for carrier.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let s = run(&["ip", "-n", NS_B, "-br", "link", "show", "eth0"])?;
        if s.split_whitespace().nth(1) == Some("UP") {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("the benchmark veth did not come up: {s}");
        }
        nap(Duration::from_millis(50))?;
    }
}

/// trafgen's frames from psg-a to psg-b, addressed to `dst_mac`.
fn trafgen_config(dst_mac: &str, flows: u32) -> String {
    trafgen::config("pktgen", &trafgen::Frames { src_mac: MAC_A, dst_mac, src_ip: &IP_A, dst_ip: &IP_B, flows })
}

/// CPU time of `pid` and its children (trafgen's worker is a child process).
fn tree_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = sys::process_cpu_ns(pid)?;
    for c in sys::children(pid) {
        total += sys::process_cpu_ns(c).unwrap_or(0);
    }
    Some(total)
}

struct Ctx<'a> {
    args: &'a PktgenArgs,
    pktgen: PathBuf,
    workdir: PathBuf,
    dst_mac: &'static str,
    pktgen_port: Option<String>,
}

fn measure(ctx: &mut Ctx, gen: Gen, round: u32) -> Result<Sample> {
    let a = ctx.args;
    let core = a.core.to_string();
    let total = a.window.warmup + a.window.duration + 10.0;
    let log = ctx.workdir.join(format!("{}-r{round}.log", gen.name()));
    let mut argv: Vec<String> = ["ip", "netns", "exec", NS_A, "taskset", "-c", &core].iter().map(std::string::ToString::to_string).collect();
    match gen {
        Gen::Pktgen => {
            argv.push(ctx.pktgen.display().to_string());
            for s in [
                "send", "-i", "eth0", "--src-ip", IP_A, "--dst-ip", IP_B, "--dst-mac", ctx.dst_mac, "--dst-port", "9", "--size", "64",
                "--rate", "max", "--json", "--quiet",
            ] {
                argv.push(s.into());
            }
            argv.push("--src-port".into());
            argv.push(format!("{FIRST_SPORT}-{}", FIRST_SPORT + a.flows - 1));
            argv.push("--duration".into());
            argv.push(format!("{total}s"));
            if let Some(extra) = &a.pktgen_args {
                argv.extend(extra.split_whitespace().map(String::from));
            }
        }
        Gen::Trafgen => {
            let cfg = ctx.workdir.join("trafgen.cfg");
            std::fs::write(&cfg, trafgen_config(ctx.dst_mac, a.flows))?;
            argv.push("trafgen".into());
            argv.extend(trafgen::args(&cfg, a.trafgen_mode));
        }
    }
    let mut p = Proc::spawn(gen.name(), &argv, log)?;
    let res = window(ctx, &mut p);
    // SIGINT to the generator and its children (trafgen's worker); both print a summary.
    let (st, killed) = p.stop(sys::Signal::SIGINT, true, Duration::from_secs(10));
    let mut s = res?;
    if killed {
        bail!("{} did not stop on SIGINT and was killed", gen.name());
    }
    let text = p.log_text();
    s.generator = gen;
    s.round = round;
    s.reported = match gen {
        Gen::Pktgen => {
            if st.is_some_and(|st| !st.success()) {
                bail!("pktgen exited with {}:\n    {}", st.expect("checked"), p.log_tail(8));
            }
            let v: Value = text
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .with_context(|| format!("pktgen printed no JSON:\n    {}", p.log_tail(8)))?;
            if ctx.pktgen_port.is_none() {
                ctx.pktgen_port = v.pointer("/tx_port").map(describe_port);
            }
            v.get("tx").cloned()
        }
        Gen::Trafgen => trafgen::parse_sent(&text).map(|n| serde_json::json!({ "sent": n })),
    };
    Ok(s)
}

fn describe_port(p: &Value) -> String {
    let io = p.get("io").and_then(Value::as_str).unwrap_or("?");
    let zc = p.get("zerocopy").and_then(Value::as_bool).unwrap_or(false);
    let budget = p.get("tx_budget").and_then(Value::as_u64);
    format!(
        "{io} {}{}",
        if zc { "zero-copy" } else { "copy mode" },
        budget.map_or_else(|| ", kernel's TX budget (32)".into(), |b| format!(", TX budget {b} frames per sendto()"))
    )
}

fn window(ctx: &Ctx, p: &mut Proc) -> Result<Sample> {
    let a = ctx.args;
    let watch = |p: &mut Proc, d: f64| -> Result<()> {
        let end = Instant::now() + Duration::from_secs_f64(d);
        while Instant::now() < end {
            nap((end - Instant::now()).min(Duration::from_millis(100)))?;
            if let Some(st) = p.exited() {
                bail!("{} exited early ({st}):\n    {}", p.name, p.log_tail(10));
            }
        }
        Ok(())
    };
    watch(p, a.window.warmup)?;
    let snap = |p: &Proc| -> Result<(Instant, u64, u64, CoreTimes, Option<u64>)> {
        let t0 = Instant::now();
        let rx = sys::ns_read_u64(NS_B, "/sys/class/net/eth0/statistics/rx_packets")?;
        let t1 = Instant::now();
        let tx = sys::ns_read_u64(NS_A, "/sys/class/net/eth0/statistics/tx_packets")?;
        Ok((t0 + (t1 - t0) / 2, rx, tx, CoreTimes::read(), tree_cpu_ns(p.pid())))
    };
    let s0 = snap(p)?;
    watch(p, a.window.duration)?;
    let s1 = snap(p)?;
    let w = (s1.0 - s0.0).as_secs_f64();
    let rx = s1.1.saturating_sub(s0.1);
    let tx = s1.2.saturating_sub(s0.2);
    let shares = s0.3.shares(&s1.3);
    let share = shares.get(a.core);
    Ok(Sample {
        round: 0,
        generator: Gen::Pktgen,
        pps: (rx as f64 / w).round() as u64,
        offered_pps: (tx as f64 / w).round() as u64,
        window_s: round_to(w, 4),
        cpu_ns_per_frame: match (s0.4, s1.4) {
            (Some(x), Some(y)) if rx > 0 => Some(round_to(y.saturating_sub(x) as f64 / rx as f64, 1)),
            _ => None,
        },
        core_busy: share.map(|s| round_to(s.busy, 3)),
        core_softirq: share.map(|s| round_to(s.softirq, 3)),
        reported: None,
    })
}

impl Measured for Sample {
    fn rates(&self) -> (u64, u64) {
        (self.pps, self.offered_pps)
    }
    fn note(&self) -> String {
        self.cpu_ns_per_frame.map(|n| format!(", {n:.0} ns CPU/frame")).unwrap_or_default()
    }
}

pub fn main(args: PktgenArgs) -> Result<i32> {
    if !preflight::root("pktgen", "it creates network namespaces") {
        return Ok(1);
    }
    if args.window.rounds == 0 || args.window.duration <= 0.0 || args.window.warmup < 0.0 {
        bail!("--rounds and --duration must be positive");
    }
    if args.core >= sys::online_cpus() {
        bail!("--core {} does not exist ({} online)", args.core, sys::online_cpus());
    }
    let pktgen = preflight::program_beside(&args.pktgen, "pktgen")?;
    if !pktgen.is_file() {
        bail!("no pktgen binary at {} (build it: cargo build --release -p podswitch-pktgen)", pktgen.display());
    }
    preflight::programs(&["ip", "trafgen", "taskset", "ethtool", "sysctl"], "scripts/bench.sh installs them")?;
    let _lock = sys::lock_file("/run/psg-bench.lock")?;
    let workdir = std::env::temp_dir().join(format!("psg-bench-{}", std::process::id()));
    let guard = Cleanup::install(workdir.clone(), destroy)?;
    let started = Instant::now();
    let started_utc = utc_now();
    let loadavg_start = loadavg();
    progress(format!(
        "{} round(s) x {} s (+{} s warm-up) of pktgen and trafgen ({}) on core {}, sink {}",
        args.window.rounds,
        args.window.duration,
        args.window.warmup,
        args.trafgen_mode.name(),
        args.core,
        args.sink.name()
    ));
    progress("creating namespaces psg-a, psg-b");
    create()?;
    let mut ctx = Ctx {
        args: &args,
        pktgen,
        workdir,
        dst_mac: if args.sink == Sink::Drop { MAC_OTHER } else { MAC_B },
        pktgen_port: None,
    };
    let order = |round: u32| if round % 2 == 1 { vec![Gen::Pktgen, Gen::Trafgen] } else { vec![Gen::Trafgen, Gen::Pktgen] };
    let done = rounds::run("pktgen", args.window.rounds, order, |gen, round| {
        let res = measure(&mut ctx, gen, round);
        // Let the previous generator's socket go before the next binds.
        if !sys::interrupted() {
            nap(Duration::from_millis(300)).ok();
        }
        res
    });
    if done.interrupted || sys::interrupted() {
        drop(guard);
        return Ok(130);
    }
    let samples = done.samples;
    let errors = done.failures.into_iter().map(|(round, generator, error)| RoundError { round, generator, error }).collect();
    let pktgen_port = ctx.pktgen_port.take();
    drop(guard);
    let summary = summarize(&args, samples, errors, pktgen_port, started_utc, loadavg_start, started.elapsed().as_secs_f64());
    report::publish(
        &args.output,
        &summary,
        || Ok(vec![("pktgen.json", report::json(&summary)?), ("pktgen.md", markdown(&summary))]),
        || table(&summary),
        progress,
    )?;
    let incomplete = summary.generators.iter().any(|g| g.rates.rounds_ok == 0);
    Ok(if summary.errors.is_empty() && !incomplete { 0 } else { 1 })
}

fn summarize(
    args: &PktgenArgs,
    samples: Vec<Sample>,
    errors: Vec<RoundError>,
    pktgen_port: Option<String>,
    started_utc: String,
    loadavg_start: String,
    elapsed: f64,
) -> Summary {
    let generators: Vec<GenSummary> = [Gen::Pktgen, Gen::Trafgen]
        .iter()
        .map(|&g| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.generator == g).collect();
            let cpu: Vec<f64> = mine.iter().filter_map(|s| s.cpu_ns_per_frame).collect();
            GenSummary {
                generator: g,
                rates: stats::Rates::of(mine.iter().map(|s| s.pps).collect()),
                median_cpu_ns_per_frame: stats::median(&cpu).map(|x| round_to(x, 1)),
            }
        })
        .collect();
    let med = |g: Gen| generators.iter().find(|s| s.generator == g).and_then(|s| s.rates.median_pps);
    let ratio = stats::ratio;
    let per_round = (1..=args.window.rounds)
        .filter_map(|r| {
            let p = |g: Gen| samples.iter().find(|s| s.round == r && s.generator == g).map(|s| s.pps);
            ratio(p(Gen::Pktgen), p(Gen::Trafgen))
        })
        .collect();
    Summary {
        pktgen_pps: med(Gen::Pktgen),
        trafgen_pps: med(Gen::Trafgen),
        pktgen_vs_trafgen: ratio(med(Gen::Pktgen), med(Gen::Trafgen)),
        pktgen_vs_trafgen_per_round: per_round,
        trafgen_mode: args.trafgen_mode.name(),
        pktgen_port,
        sink: args.sink.name(),
        core: args.core,
        rounds: args.window.rounds,
        duration_s: args.window.duration,
        warmup_s: args.window.warmup,
        frame_bytes: FRAME_BYTES,
        frame_bytes_with_fcs: FRAME_BYTES + 4,
        flows: args.flows,
        generators,
        samples,
        errors,
        kernel: run(&["uname", "-r"]).map(|s| s.trim().to_string()).unwrap_or_default(),
        loadavg_start,
        loadavg_end: loadavg(),
        stamp: Stamp::new(started_utc, elapsed),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn headline(s: &Summary) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(r) = s.pktgen_vs_trafgen {
        v.push(format!(
            "pktgen/trafgen = {r:.3} (medians; target >= 1: {})",
            if r >= 1.0 { "met" } else { "NOT met" }
        ));
    }
    if !s.pktgen_vs_trafgen_per_round.is_empty() {
        let r: Vec<String> = s.pktgen_vs_trafgen_per_round.iter().map(|r| format!("{r:.3}")).collect();
        v.push(format!("per round = {}", r.join(", ")));
    }
    v
}

/// A generator's cells in the summary tables: name, median, min and max pps, CPU per frame,
/// the per-round rates.
fn generator_row(g: &GenSummary) -> [String; 6] {
    [
        g.generator.name().to_string(),
        opt_thousands(g.rates.median_pps),
        opt_thousands(g.rates.min_pps),
        opt_thousands(g.rates.max_pps),
        g.median_cpu_ns_per_frame.map_or_else(|| "-".into(), |n| format!("{n:.0} ns")),
        g.rates.per_round_pps.iter().map(|&p| thousands(p)).collect::<Vec<_>>().join(" / "),
    ]
}

/// The readable report.
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "\npktgen: {}-byte UDP frames (60 + FCS) psg-a -> psg-b over one veth, {} flows, core {}; {} round(s) x {} s after {} s warm-up, interleaved\n",
        s.frame_bytes_with_fcs, s.flows, s.core, s.rounds, s.duration_s, s.warmup_s
    ));
    o.push_str(&format!(
        "pktgen: {}; trafgen: -P 1 --no-sock-mem{} ({} mode); sink: {}\n\n",
        s.pktgen_port.as_deref().unwrap_or("?"),
        if s.trafgen_mode == "sendto" { " -t 0" } else { "" },
        s.trafgen_mode,
        s.sink
    ));
    o.push_str(&format!("{:<8}  {:>12}  {:>12}  {:>12}  {:>12}  per round (pps)\n", "", "median pps", "min pps", "max pps", "CPU/frame"));
    for g in &s.generators {
        let [name, median, min, max, cpu, rounds] = generator_row(g);
        o.push_str(&format!("{name:<8}  {median:>12}  {min:>12}  {max:>12}  {cpu:>12}  {rounds}\n"));
    }
    o.push('\n');
    for l in headline(s) {
        o.push_str(&l);
        o.push('\n');
    }
    o.push_str(&rounds::failure_lines(s.errors.iter().map(RoundError::shown)));
    o
}

fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str("# pktgen benchmark: last result\n\n");
    o.push_str("Written by `scripts/bench.sh pktgen` (see perf/README.md for how it is measured).\n\n");
    o.push_str(&format!(
        "- Run: {}, git {}, kernel {}, load average {} at start / {} at end\n",
        s.stamp.started_utc,
        s.stamp.git.as_deref().unwrap_or("?"),
        s.kernel,
        s.loadavg_start,
        s.loadavg_end
    ));
    o.push_str(&format!(
        "- Frames: {} bytes + FCS = {} on the wire, {} UDP flows, psg-a -> psg-b over one veth; sink: {}\n",
        s.frame_bytes, s.frame_bytes_with_fcs, s.flows, s.sink
    ));
    o.push_str(&format!(
        "- pktgen: {}; trafgen: {} mode; both on core {}; {} round(s) x {} s after {} s warm-up, interleaved\n\n",
        s.pktgen_port.as_deref().unwrap_or("?"),
        s.trafgen_mode,
        s.core,
        s.rounds,
        s.duration_s,
        s.warmup_s
    ));
    let head = ["generator", "median pps", "min pps", "max pps", "CPU per frame", "per round (pps)"];
    let rows: Vec<[String; 6]> = s.generators.iter().map(generator_row).collect();
    o.push_str(&report::markdown_table(&head, &rows, &[0, 5]));
    o.push('\n');
    o.push_str(&report::section("", "- ", headline(s)));
    o.push_str("\n## Per round\n\n");
    let head = ["round", "generator", "pps", "offered pps", "CPU per frame", "core busy", "core softirq"];
    let per_round = |x: &Sample| {
        [
            x.round.to_string(),
            x.generator.name().to_string(),
            thousands(x.pps),
            thousands(x.offered_pps),
            x.cpu_ns_per_frame.map_or_else(|| "-".into(), |n| format!("{n:.0} ns")),
            pct(x.core_busy),
            pct(x.core_softirq),
        ]
    };
    o.push_str(&report::markdown_table(&head, &s.samples.iter().map(per_round).collect::<Vec<_>>(), &[1]));
    o.push_str(&rounds::failure_section(s.errors.iter().map(RoundError::shown)));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trafgen_frames_are_60_bytes_like_pktgens() {
        let cfg = trafgen_config(MAC_B, 256);
        assert!(cfg.contains("fill(0x00, 18)"));
        assert!(cfg.contains("dinc(1024, 1279)"));
        assert!(cfg.contains(&format!("da={MAC_B}")));
    }

    #[test]
    fn port_description() {
        let v = serde_json::json!({"io": "af_xdp", "zerocopy": false, "tx_budget": 256});
        assert_eq!(describe_port(&v), "af_xdp copy mode, TX budget 256 frames per sendto()");
        let v = serde_json::json!({"io": "af_xdp", "zerocopy": false, "tx_budget": null});
        assert!(describe_port(&v).contains("(32)"));
    }
}
