//! `podswitch-perf cni`: how fast the CNI plugin brings pods up and takes them down (issue
//! #12), podswitch side by side with the reference `ptp` plugin + `host-local`, in one run.
//!
//! What it measures, per pod (N pods, default 200, one after another as a runtime with one
//! sandbox at a time would):
//! - **ADD to first packet forwarded**: from just before the plugin's ADD is started to the
//!   instant the peer receives the pod's first UDP datagram. A sender inside the pod's
//!   namespace, its socket opened before the ADD, tries one datagram every 200 µs from the
//!   moment the ADD returned (when a runtime starts the pod's containers; nothing in a real
//!   sandbox sends earlier) until the peer has one ([`probe`]); the first that gets through
//!   stops the clock. With `--send-from start` it tries from the ADD's start (its first tries
//!   fail: no interface, no route); then the pod's kernel may ask ARP for its gateway before
//!   anything answers and retry only after 1 s, with either plugin. The peer is another pod on the same node, in its
//!   own namespace, attached by the same plugin before the measured pods; its receiver and
//!   the clock are this program's (one monotonic clock for every namespace). Figures: p50 and
//!   p99 by nearest rank over all pods of all rounds; also when ADD returned (informative).
//! - **pods created per second**: N divided by the wall time of the create phase (each ADD
//!   started once the previous pod's first packet arrived, or its ADD failed), median over
//!   rounds; **pods deleted per second**: N divided by the wall time of DELs one after another
//!   (each with its ADD's result as `prevResult`), median over rounds.
//!
//! Setups ([`setups`]): `podswitch` (podswitch-cni, `podswitch run` in the node namespace,
//! no Pod objects) and `ptp` (ptp + host-local); the same namespaces ([`topo`]: node, peer,
//! N pod sandboxes made before the create phase and not timed), IPAM, MTU and CNI version.
//! Rounds interleave the setups (the order rotates); each turn makes its namespaces, brings
//! its setup up, runs the create and delete phases and takes everything down again.
//!
//! Output: a table on stdout, or with `--json` one JSON object as the last line, starting with
//! `{"add_p50_ms":…,"add_p99_ms":…,"pods_per_s":…,"del_pods_per_s":…,"ptp_add_p50_ms":…,
//! "ptp_add_p99_ms":…,"ptp_pods_per_s":…,"ptp_del_pods_per_s":…,"add_p50_ratio":…,
//! "add_p99_ratio":…` (podswitch's figures unprefixed; ratios podswitch/ptp; the issue's
//! target is `add_p99_ratio` ≤ 1.5, reported, not asserted); `cni.md` and `cni.json` under the
//! results directory. Exit status 0 when every pod of every turn got through.
mod probe;
mod report;
mod setups;
mod topo;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::harness::report::OutputArgs;
use crate::harness::{host, preflight, progress, rounds};
use crate::stats::round_to;
use crate::sys;
use setups::{PodId, Programs, Setup, Turn};

/// The create phase gives up after this many pods in a row did not get through (a switch
/// that attaches no more ports would otherwise cost the timeout for every pod left).
const GIVE_UP_AFTER: usize = 3;

/// ADD to first packet forwarded and pods per second: podswitch-cni vs ptp + host-local.
#[derive(Debug, Clone, clap::Args)]
pub struct CniArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Pods per setup and round.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub pods: u32,
    /// Rounds; each runs every setup once (order rotating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Setups to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Setup::ALL)]
    pub setups: Vec<Setup>,
    /// How long after its ADD started a pod's first packet may take before the pod counts as
    /// failed, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub first_packet_timeout: f64,
    /// When a pod starts sending: once ADD returned (`return`: when a runtime starts the
    /// pod's containers), or from its ADD's start (`start`: the first instant the pod could
    /// send; then a pod whose kernel asks ARP for its gateway before anything answers waits
    /// for the kernel's retry, 1 s later). The clock starts at the ADD's start either way.
    #[arg(long, value_enum, default_value_t = SendFrom::Return)]
    pub send_from: SendFrom,
    /// Core of the switch's worker (`taskset -c` and `--cores`).
    #[arg(long, default_value_t = 1)]
    pub core: usize,
    /// UMEM frames per worker of the switch (`podswitch run --frames`); default: the switch's.
    #[arg(long, value_name = "N")]
    pub switch_frames: Option<u32>,
    /// Keep each turn's switch log as DIR/roundN-podswitch.log (the temporary turn directories
    /// are removed at the end); it says how long each port took to attach.
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
    /// The podswitch binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch: Option<PathBuf>,
    /// The podswitch-cni binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch_cni: Option<PathBuf>,
}

/// When a pod starts sending (`--send-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SendFrom {
    Start,
    Return,
}

impl SendFrom {
    pub fn says(self) -> &'static str {
        match self {
            SendFrom::Start => "from its ADD's start",
            SendFrom::Return => "once its ADD returned",
        }
    }
}

/// One pod of one turn.
#[derive(Debug, Clone, Serialize)]
pub struct PodTimes {
    /// ADD start to the peer's receipt of the pod's first datagram, ms.
    pub first_packet_ms: Option<f64>,
    /// ADD start to the plugin's exit, ms.
    pub add_return_ms: Option<f64>,
}

/// p50, p99 (nearest rank) and maximum of some times, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        let p = |q| crate::stats::percentile(v, q).map(|x| round_to(x, 3));
        Spread { p50_ms: p(50.0), p99_ms: p(99.0), max_ms: p(100.0) }
    }
}

/// One setup in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub setup: Setup,
    /// Every pod tried, in order (not in the JSON: the spreads below summarize them).
    #[serde(skip)]
    pub pods: Vec<PodTimes>,
    /// ADD start to first packet, over the pods that got through.
    pub first_packet: Spread,
    /// ADD start to the plugin's exit, over the ADDs that succeeded.
    pub add_return: Spread,
    /// Wall time of the create phase, s.
    pub create_s: Option<f64>,
    /// Wall time of the delete phase, s.
    pub delete_s: Option<f64>,
    /// Pods that got through (ADD succeeded and the first packet arrived).
    pub pods_ok: usize,
    pub pods_per_s: Option<f64>,
    pub del_pods_per_s: Option<f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    #[serde(flatten)]
    pub host: host::Host,
    /// The reference plugins' package version (dpkg), "" if unknown.
    pub reference_plugins: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub pods: u32,
    pub rounds: u32,
    pub setups: Vec<Setup>,
    pub first_packet_timeout_s: f64,
    pub send_every_us: u64,
    pub send_from: SendFrom,
    pub switch_core: usize,
    /// `podswitch run --frames` (None: the switch's default).
    pub switch_frames: Option<u32>,
    pub cni_version: &'static str,
    pub pod_range: &'static str,
    pub mtu: u32,
}

fn progress(msg: impl AsRef<str>) {
    progress::say_timed("cni", msg);
}

pub fn main(args: CniArgs) -> Result<i32> {
    if !preflight::root("cni", "network namespaces, veths, XDP") {
        return Ok(1);
    }
    if args.rounds == 0 || args.setups.is_empty() || !args.first_packet_timeout.is_finite() || args.first_packet_timeout <= 0.0 {
        bail!("--rounds must be positive, --setups non-empty, --first-packet-timeout positive");
    }
    preflight::online_core("core", args.core)?;
    let prog = Programs {
        podswitch: preflight::program_beside(&args.podswitch, "podswitch")?,
        podswitch_cni: preflight::program_beside(&args.podswitch_cni, "podswitch-cni")?,
        core: args.core,
        switch_frames: args.switch_frames,
    };
    if args.setups.contains(&Setup::Podswitch) {
        preflight::built(&[(&prog.podswitch, "podswitch", "podswitch-control"), (&prog.podswitch_cni, "podswitch-cni", "podswitch-cni")])?;
    }
    for p in ["ptp", "host-local"] {
        let path = std::path::Path::new(setups::REFERENCE_PLUGINS).join(p);
        if !path.is_file() {
            bail!("no {} (Debian package containernetworking-plugins; scripts/bench.sh cni installs it)", path.display());
        }
    }
    preflight::programs(&["ip", "taskset"], "scripts/bench.sh cni installs them")?;
    let run = preflight::begin("cni", "psbcni", topo::destroy)?;
    progress(format!(
        "{} round(s) of {}, {} pods each; switch worker on core {}",
        args.rounds,
        rounds::names(&args.setups),
        args.pods,
        args.core
    ));
    let mut notes = Vec::new();
    let done = rounds::rotated("cni", args.rounds, &args.setups, &mut notes, |setup, round, notes| {
        let dir = run.workdir.join(format!("round{round}-{}", setup.name()));
        run_turn(&args, &prog, setup, round, &dir, notes)
    });
    if let Some(status) = done.take_down("cni", run.guard) {
        return Ok(status);
    }
    let samples = done.samples;
    let env = Env {
        host: run.start.host(),
        reference_plugins: sys::run(&["dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins"]).unwrap_or_default(),
    };
    let params = Params {
        pods: args.pods,
        rounds: args.rounds,
        setups: args.setups.clone(),
        first_packet_timeout_s: args.first_packet_timeout,
        send_every_us: probe::SEND_EVERY.as_micros() as u64,
        send_from: args.send_from,
        switch_core: args.core,
        switch_frames: args.switch_frames,
        cni_version: setups::CNI_VERSION,
        pod_range: setups::POD_RANGE,
        mtu: setups::MTU,
    };
    let summary = report::summarize(samples, params, env, notes, run.start.utc.clone(), run.start.elapsed_s());
    crate::harness::report::publish(&args.output, &summary, || report::files(&summary), || report::table(&summary), progress)?;
    Ok(if summary.complete() { 0 } else { 1 })
}

fn ms(d: Duration) -> f64 {
    round_to(d.as_secs_f64() * 1e3, 3)
}

/// A tag no other turn (nor a run before this one) uses: stray datagrams of another turn do
/// not count.
fn tag_of(round: u32, setup: Setup) -> u32 {
    (std::process::id() << 8) ^ (round << 2) ^ (setup as u32)
}

/// One setup's turn: namespaces, setup, peer, create phase, delete phase, everything down.
fn run_turn(args: &CniArgs, prog: &Programs, setup: Setup, round: u32, dir: &std::path::Path, notes: &mut Vec<String>) -> Result<Sample> {
    let tag = format!("round {round}/{} {}", args.rounds, setup.name());
    progress(format!("{tag}: making the node, the peer and {} pod namespaces", args.pods));
    topo::create(args.pods as usize)?;
    let res = (|| -> Result<Sample> {
        progress(format!("{tag}: starting ({})", setup.title()));
        let mut turn = Turn::start(setup, prog, dir)?;
        let res = measure(args, &mut turn, setup, round, &tag, notes);
        for n in turn.stop() {
            notes.push(format!("round {round} {}: {n}", setup.name()));
        }
        if let (Some(keep), Setup::Podswitch) = (&args.keep_logs, setup) {
            let to = keep.join(format!("round{round}-podswitch.log"));
            if let Err(e) = std::fs::create_dir_all(keep).and_then(|()| std::fs::copy(dir.join("podswitch.log"), &to)) {
                notes.push(format!("round {round}: keeping the switch log as {}: {e}", to.display()));
            }
        }
        res
    })();
    topo::destroy();
    res
}

fn measure(args: &CniArgs, turn: &mut Turn, setup: Setup, round: u32, tag: &str, notes: &mut Vec<String>) -> Result<Sample> {
    let t = tag_of(round, setup);
    let peer = probe::Peer::start(topo::NS_PEER, t)?;
    let peer_id = PodId { container_id: format!("psbcni-{t:08x}-peer"), name: "peer".into(), netns: topo::NS_PEER.into() };
    let peer_add = turn.add(&peer_id)?;
    let peer_ip = setups::address(&peer_add.result)?;
    progress(format!("{tag}: peer {peer_ip} attached in {:.1} ms; creating {} pods", ms(peer_add.returned - peer_add.started), args.pods));
    let timeout = Duration::from_secs_f64(args.first_packet_timeout);
    let ids: Vec<PodId> = (0..args.pods)
        .map(|i| PodId { container_id: format!("psbcni-{t:08x}-{i}"), name: format!("pod-{i}"), netns: topo::pod_ns(i as usize) })
        .collect();
    let mut s = Sample { round, setup, pods: Vec::new(), first_packet: Spread::default(), add_return: Spread::default(), create_s: None, delete_s: None, pods_ok: 0, pods_per_s: None, del_pods_per_s: None, errors: Vec::new() };
    let mut results = Vec::with_capacity(ids.len());
    let phase = Instant::now();
    let mut failed_in_a_row = 0;
    for (i, id) in ids.iter().enumerate() {
        if failed_in_a_row == GIVE_UP_AFTER {
            s.errors.push(format!("gave up after {GIVE_UP_AFTER} pods in a row did not get through: pods {i} to {} not created", ids.len() - 1));
            progress(format!("{tag}: {GIVE_UP_AFTER} pods in a row did not get through; giving up on the {} left", ids.len() - i));
            break;
        }
        let ok_before = s.pods_ok;
        let sender = probe::Sender::start(&id.netns, t, i as u32, peer_ip, &peer, args.send_from == SendFrom::Start)?;
        match turn.add(id) {
            Ok(a) => {
                sender.go();
                let first = peer.wait_first(i as u32, timeout.saturating_sub(a.started.elapsed()))?;
                sender.stop();
                let add_ms = ms(a.returned - a.started);
                match first {
                    Some(f) => {
                        s.pods.push(PodTimes { first_packet_ms: Some(ms(f.saturating_duration_since(a.started))), add_return_ms: Some(add_ms) });
                        s.pods_ok += 1;
                    }
                    None => {
                        s.pods.push(PodTimes { first_packet_ms: None, add_return_ms: Some(add_ms) });
                        s.errors.push(format!("{}: no packet reached the peer within {:?} of ADD's start (ADD returned after {add_ms} ms)", id.name, timeout));
                    }
                }
                results.push(Some(a.result));
            }
            Err(e) => {
                sender.stop();
                if sys::interrupted() {
                    return Err(sys::Interrupted.into());
                }
                s.pods.push(PodTimes { first_packet_ms: None, add_return_ms: None });
                s.errors.push(format!("{e:#}"));
                results.push(None);
            }
        }
        failed_in_a_row = if s.pods_ok > ok_before { 0 } else { failed_in_a_row + 1 };
        if let Some(e) = turn.exited() {
            bail!("{e}");
        }
        if (i + 1) % 50 == 0 {
            progress(format!("{tag}: {} pods created", i + 1));
        }
    }
    let create = phase.elapsed();
    s.create_s = Some(round_to(create.as_secs_f64(), 3));
    s.pods_per_s = (s.pods_ok > 0).then(|| round_to(s.pods_ok as f64 / create.as_secs_f64(), 2));
    s.first_packet = Spread::of(&s.pods.iter().filter_map(|p| p.first_packet_ms).collect::<Vec<_>>());
    s.add_return = Spread::of(&s.pods.iter().filter_map(|p| p.add_return_ms).collect::<Vec<_>>());
    let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
    progress(format!(
        "{tag}: {} of {} pods through in {:.2} s ({} pods/s); ADD to first packet p50 {} ms, p99 {} ms, max {} ms; ADD returned p50 {} ms, p99 {} ms",
        s.pods_ok,
        args.pods,
        create.as_secs_f64(),
        s.pods_per_s.map_or("-".into(), |r| format!("{r:.1}")),
        f(s.first_packet.p50_ms),
        f(s.first_packet.p99_ms),
        f(s.first_packet.max_ms),
        f(s.add_return.p50_ms),
        f(s.add_return.p99_ms)
    ));
    for e in s.errors.iter().take(GIVE_UP_AFTER + 1) {
        progress(format!("{tag}: {e}"));
    }
    if !s.errors.is_empty() {
        // What the switch says while the pods are still there: ports where the kernel lost
        // frames, the workers' free frames.
        for n in turn.switch_state() {
            progress(format!("{tag}: {n}"));
            notes.push(format!("round {round} {}: {n}", setup.name()));
        }
    }

    let phase = Instant::now();
    let mut deleted = 0usize;
    for (id, r) in ids.iter().zip(&results) {
        // (`results` holds the pods tried: the create phase may have given up early.)
        match turn.del(id, r.as_ref()) {
            Ok(()) => deleted += 1,
            Err(e) => {
                if sys::interrupted() {
                    return Err(sys::Interrupted.into());
                }
                s.errors.push(format!("{e:#}"));
            }
        }
    }
    let delete = phase.elapsed();
    s.delete_s = Some(round_to(delete.as_secs_f64(), 3));
    s.del_pods_per_s = (deleted > 0).then(|| round_to(deleted as f64 / delete.as_secs_f64(), 2));
    progress(format!(
        "{tag}: {deleted} pods deleted in {:.2} s ({} pods/s)",
        delete.as_secs_f64(),
        s.del_pods_per_s.map_or("-".into(), |r| format!("{r:.1}"))
    ));
    if let Err(e) = turn.del(&peer_id, Some(&peer_add.result)) {
        s.errors.push(format!("{e:#}"));
    }
    if let Err(e) = peer.stop() {
        s.errors.push(format!("{e:#}"));
    }
    Ok(s)
}
