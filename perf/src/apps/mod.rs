//! `podswitch-perf apps`: what applications get (issue #13), podswitch side by side with the
//! kernel in one run: iperf3 with one and with 8 TCP streams pod -> pod and pod -> ClusterIP ->
//! pod, and nginx behind the ClusterIP driven by wrk with keep-alive and with a new connection
//! per request (`Connection: close`): requests per second and their p99 latency; for every
//! figure the CPU time it took ([`load`] says what is counted).
//!
//! Setups ([`setups`]): `switch` (podswitch, adaptive polling, its worker pinned to
//! `--fwd-core`) and `kernel` (the pods on a Linux bridge with default offloads, kube-proxy's
//! nftables rules for the Service). Rounds interleave them (the order rotates each round; each
//! setup is brought up and taken down within its turn); figures are medians over rounds.
//! After each switch turn, the frames the kernel lost before the switch saw them (`show ports`
//! KERNEL_LOST: receive ring full, no fill frame) are reported per port and per workload.
//!
//! Output: a table on stdout, or with `--json` one JSON object as the last line, starting with
//! `{"switch_tcp_gbps":…,"kernel_tcp_gbps":…,"switch_svc_tcp_gbps":…,"kernel_svc_tcp_gbps":…,
//! "switch_rr_per_s":…,"kernel_rr_per_s":…,"switch_conn_per_s":…,"kernel_conn_per_s":…,
//! "switch_cpu_per_req_us":…,"kernel_cpu_per_req_us":…` (one stream; keep-alive requests;
//! new-connection requests; CPU per keep-alive request); `apps.md` and `apps.json` under the
//! results directory. Exit status 0 when every setup gave every figure.
pub mod load;
mod report;
mod setups;

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::harness::report::OutputArgs;
use crate::harness::{host, preflight, progress, rounds};
use crate::lab::{Lab, NS_A, NS_B};
use load::{HttpResult, TcpResult};
use setups::{PortLoss, Setup, SwitchOpts};

/// Applications through podswitch vs the kernel: iperf3 and nginx + wrk, pod -> pod and through a ClusterIP.
#[derive(Debug, Clone, clap::Args)]
pub struct AppsArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Rounds; each runs every setup once (order rotating).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Length of each iperf3 and wrk run, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Setups to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Setup::ALL)]
    pub setups: Vec<Setup>,
    /// TCP streams of the multi-stream iperf3 runs.
    #[arg(long, default_value_t = 8)]
    pub streams: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 50)]
    pub connections: u32,
    /// Core of the switch's worker (the switch process is pinned there).
    #[arg(long, default_value_t = 1)]
    pub fwd_core: usize,
    /// Run the switch's worker with --busy-poll.
    #[arg(long)]
    pub busy_poll: bool,
    /// A further `podswitch run` argument (repeatable), e.g. `--switch-arg=--rx-ring=4096`.
    #[arg(long = "switch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub switch_args: Vec<String>,
    /// Only the one-stream iperf3 run pod -> pod (for looking at losses at the door).
    #[arg(long)]
    pub tcp_only: bool,
    /// The podswitch binary (default: next to this program).
    #[arg(long, value_name = "PATH")]
    pub podswitch: Option<PathBuf>,
}

/// The workloads, in the order each turn runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Tcp1,
    TcpN,
    SvcTcp1,
    SvcTcpN,
    HttpKeepAlive,
    HttpClose,
}

impl Workload {
    pub const ALL: [Workload; 6] = [Workload::Tcp1, Workload::TcpN, Workload::SvcTcp1, Workload::SvcTcpN, Workload::HttpKeepAlive, Workload::HttpClose];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Tcp1 => "tcp1",
            Workload::TcpN => "tcpN",
            Workload::SvcTcp1 => "svc-tcp1",
            Workload::SvcTcpN => "svc-tcpN",
            Workload::HttpKeepAlive => "http-keepalive",
            Workload::HttpClose => "http-close",
        }
    }
}

/// One workload of one setup in one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub round: u32,
    pub setup: Setup,
    pub workload: Workload,
    pub tcp: Option<TcpResult>,
    pub http: Option<HttpResult>,
    /// Switch only: frames the kernel lost per port during this workload.
    pub kernel_lost: Vec<PortLoss>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Env {
    #[serde(flatten)]
    pub host: host::Host,
    pub iperf3: String,
    pub nginx: String,
    pub wrk: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub rounds: u32,
    pub seconds: u32,
    pub setups: Vec<Setup>,
    pub streams: u32,
    pub connections: u32,
    pub fwd_core: usize,
    pub busy_poll: bool,
    pub switch_args: Vec<String>,
}

fn progress(msg: impl AsRef<str>) {
    progress::say_timed("apps", msg);
}

fn version(cmd: &[&str]) -> String {
    std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map(|o| {
            let t = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&t).lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

pub fn main(args: AppsArgs) -> Result<i32> {
    if !preflight::root("apps", "network namespaces, XDP, nftables") {
        return Ok(1);
    }
    if args.rounds == 0 || args.seconds == 0 || args.setups.is_empty() || args.streams == 0 || args.connections == 0 {
        bail!("--rounds, --seconds, --streams, --connections must be positive and --setups non-empty");
    }
    preflight::online_core("fwd-core", args.fwd_core)?;
    let podswitch = preflight::program_beside(&args.podswitch, "podswitch")?;
    preflight::built(&[(&podswitch, "podswitch", "podswitch-control")])?;
    preflight::programs(&["ip", "bridge", "taskset", "ethtool", "sysctl", "nft", "iperf3", "nginx", "wrk", "curl"], "scripts/bench.sh apps installs them")?;
    let mut run = preflight::begin("apps", "psa", destroy)?;
    run.guard = run.guard.remove_also(setups::socket());
    let workdir = &run.workdir;
    progress(format!(
        "{} round(s) of {} x {} s per workload; switch worker on core {}{}",
        args.rounds,
        rounds::names(&args.setups),
        args.seconds,
        args.fwd_core,
        if args.busy_poll { " (busy-polling)" } else { "" }
    ));
    let lab = Lab::create()?;
    let manifests = workdir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("apps.yaml"), setups::manifests(&lab))?;
    let sw = SwitchOpts { podswitch: &podswitch, manifests: &manifests, workdir, core: args.fwd_core, busy_poll: args.busy_poll, extra: &args.switch_args };
    let mut samples = Vec::new();
    let mut notes = Vec::new();
    let done = rounds::rotated("apps", args.rounds, &args.setups, &mut notes, |setup, round, notes| {
        run_setup(&args, &lab, &sw, setup, round, &mut samples, notes)
    });
    if let Some(status) = done.take_down("apps", run.guard) {
        return Ok(status);
    }
    let env = Env {
        host: run.start.host(),
        iperf3: version(&["iperf3", "--version"]),
        nginx: version(&["nginx", "-v"]),
        wrk: version(&["wrk", "--version"]),
    };
    let params = Params {
        rounds: args.rounds,
        seconds: args.seconds,
        setups: args.setups.clone(),
        streams: args.streams,
        connections: args.connections,
        fwd_core: args.fwd_core,
        busy_poll: args.busy_poll,
        switch_args: args.switch_args.clone(),
    };
    let workloads = if args.tcp_only { vec![Workload::Tcp1] } else { Workload::ALL.to_vec() };
    let summary = report::summarize(samples, &workloads, params, env, notes, run.start.utc.clone(), run.start.elapsed_s());
    crate::harness::report::publish(&args.output, &summary, || report::files(&summary), || report::table(&summary), progress)?;
    Ok(if summary.complete { 0 } else { 1 })
}

/// Removes the namespaces (with every process inside) and the switch's control socket.
fn destroy() {
    crate::lab::destroy();
    let _ = std::fs::remove_file(setups::socket());
}

/// One setup's turn: up, every workload, down.
fn run_setup(args: &AppsArgs, lab: &Lab, sw: &SwitchOpts, setup: Setup, round: u32, samples: &mut Vec<Sample>, notes: &mut Vec<String>) -> Result<()> {
    let tag = format!("round {round}/{} {}", args.rounds, setup.name());
    progress(format!("{tag}: starting ({})", setup.title()));
    let mut running = setups::start(lab, setup, sw)?;
    let res = (|| -> Result<()> {
        let workloads: &[Workload] = if args.tcp_only { &[Workload::Tcp1] } else { &Workload::ALL };
        for &w in workloads {
            let s = measure(args, lab, sw, &mut running, setup, w, round, &tag)?;
            samples.push(s);
            if let Some(e) = running.exited() {
                bail!("{e}");
            }
        }
        Ok(())
    })();
    for n in running.stop(lab) {
        notes.push(format!("round {round} {}: {n}", setup.name()));
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn measure(args: &AppsArgs, lab: &Lab, sw: &SwitchOpts, running: &mut setups::Running, setup: Setup, w: Workload, round: u32, tag: &str) -> Result<Sample> {
    let pid = running.pid();
    let before = if pid.is_some() { setups::port_losses(sw.podswitch).ok() } else { None };
    let (svc, pod) = (setups::SVC_IP, lab.b.ip);
    let run = load::Run { client_ns: NS_A, server_ns: NS_B, seconds: args.seconds, workdir: sw.workdir, switch: pid };
    let mut s = Sample { round, setup, workload: w, tcp: None, http: None, kernel_lost: Vec::new(), error: None };
    let res: Result<()> = match w {
        Workload::Tcp1 | Workload::TcpN | Workload::SvcTcp1 | Workload::SvcTcpN => {
            let streams = if matches!(w, Workload::Tcp1 | Workload::SvcTcp1) { 1 } else { args.streams };
            let dst = if matches!(w, Workload::Tcp1 | Workload::TcpN) { pod } else { svc };
            load::iperf3(&run, dst, setups::IPERF_PORT, streams).map(|r| {
                progress(format!(
                    "{tag}: {} {:.2} Gbit/s, {} retransmissions, CPU {}",
                    w.name(),
                    r.gbps,
                    r.retransmits,
                    r.cpu_s.map_or("-".into(), |c| format!("{c:.2} s"))
                ));
                s.tcp = Some(r);
            })
        }
        Workload::HttpKeepAlive | Workload::HttpClose => {
            let ka = w == Workload::HttpKeepAlive;
            load::wrk(&run, svc, setups::HTTP_PORT, args.connections, ka).map(|r| {
                progress(format!(
                    "{tag}: {} {} req/s, p99 {:.0} µs, CPU {} per request{}",
                    w.name(),
                    crate::stats::thousands(r.req_per_s as u64),
                    r.p99_us,
                    r.cpu_per_req_us.map_or("-".into(), |c| format!("{c:.1} µs")),
                    if r.socket_errors + r.non_2xx > 0 { format!(" ({} socket errors, {} non-2xx)", r.socket_errors, r.non_2xx) } else { String::new() }
                ));
                s.http = Some(r);
            })
        }
    };
    if let Err(e) = res {
        s.error = Some(rounds::failed("apps", tag, w.name(), e)?);
    }
    if let (Some(b), Ok(a)) = (before, setups::port_losses(sw.podswitch)) {
        s.kernel_lost = setups::loss_delta(&b, &a);
        let lost: Vec<String> = s.kernel_lost.iter().map(|l| format!("{} {} (ring full {}, no fill frame {})", l.port, l.total(), l.rx_ring_full, l.no_fill_frame)).collect();
        progress(format!("{tag}: {} KERNEL_LOST per port: {}", w.name(), lost.join(", ")));
    }
    Ok(s)
}
