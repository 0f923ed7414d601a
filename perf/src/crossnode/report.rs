//! The crossnode result: medians over rounds per setup, the switch/kernel ratios, the readable
//! table and the markdown report.
//!
//! Contract: [`Summary`]'s field order is the JSON key order; the six headline keys come first
//! (`switch_vxlan_pps`, `kernel_vxlan_pps`, `switch_routed_pps`, `kernel_routed_pps`,
//! `switch_vxlan_tcp_gbps`, `kernel_vxlan_tcp_gbps`), `null` when a figure is missing; then
//! the routed TCP figures, the highest rates carried with at most the tolerated loss
//! (`*_ndr_pps`), the switch/kernel ratios and everything else.
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::setups::{Setup, ROUTED_POD_MTU, VXLAN_POD_MTU};
use super::{Env, Params, Sample};
use crate::harness::pktgen::RateResult;
use crate::harness::host::Stamp;
use crate::harness::report::{heading, markdown_table, padded, run_line, section, verdict};
use crate::stats::{median, median_u64 as med_u, opt_fixed as of, opt_thousands as ot, ratio, ratio_f as fratio, round_to, thousands};

/// The target for switch/kernel on VXLAN, 64-byte frames per second.
pub const VXLAN_PPS_TARGET: f64 = 1.3;
/// A UDP run that lost at most this share of what was sent ...
const UNSATURATED_LOSS: f64 = 0.001;
/// ... while the forwarding core was less busy than this did not saturate the forwarding.
const UNSATURATED_BUSY: f64 = 0.9;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub setup: Setup,
    pub rounds_ok: usize,
    pub pps: Option<u64>,
    pub pps_per_round: Vec<u64>,
    /// In most rounds nothing was lost and the forwarding core had time to spare: the
    /// generator (or its backpressure) was the limit and `pps` is a lower bound.
    pub pps_lower_bound: bool,
    pub offered_pps: Option<u64>,
    /// The highest rate carried with at most the tolerated loss (RFC 2544 search), median.
    pub ndr_pps: Option<u64>,
    /// The search's first trial, at its ceiling, passed in most rounds: a lower bound.
    pub ndr_lower_bound: bool,
    pub ndr_per_round: Vec<Option<u64>>,
    /// Busy time of the forwarding core per frame received (µs), median.
    pub fwd_core_us_per_pkt: Option<f64>,
    /// Busy share of the forwarding core during the UDP run, median.
    pub fwd_core_busy: Option<f64>,
    pub tcp_gbps: Option<f64>,
    pub tcp_gbps_per_round: Vec<f64>,
    pub tcp_retransmits: Option<u64>,
    /// Seconds until both switches routed the other node's pods (switch setups), median.
    pub switch_ready_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub switch_vxlan_pps: Option<u64>,
    pub kernel_vxlan_pps: Option<u64>,
    pub switch_routed_pps: Option<u64>,
    pub kernel_routed_pps: Option<u64>,
    pub switch_vxlan_tcp_gbps: Option<f64>,
    pub kernel_vxlan_tcp_gbps: Option<f64>,
    pub switch_routed_tcp_gbps: Option<f64>,
    pub kernel_routed_tcp_gbps: Option<f64>,
    /// The highest rates carried with at most `params.ndr_loss_tolerance` lost.
    pub switch_vxlan_ndr_pps: Option<u64>,
    pub kernel_vxlan_ndr_pps: Option<u64>,
    pub switch_routed_ndr_pps: Option<u64>,
    pub kernel_routed_ndr_pps: Option<u64>,
    /// switch/kernel of the medians; the target for VXLAN pps is >= 1.3.
    pub vxlan_pps_ratio: Option<f64>,
    pub routed_pps_ratio: Option<f64>,
    pub vxlan_tcp_ratio: Option<f64>,
    pub routed_tcp_ratio: Option<f64>,
    pub vxlan_ndr_ratio: Option<f64>,
    pub routed_ndr_ratio: Option<f64>,
    /// switch/kernel of the 64-byte rate within each round (the same round: slow drifts cancel).
    pub vxlan_pps_ratio_per_round: Vec<f64>,
    pub routed_pps_ratio_per_round: Vec<f64>,
    pub rounds: u32,
    pub cells: Vec<Cell>,
    pub params: Params,
    pub env: Env,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl Summary {
    /// Every setup asked for gave its UDP figure, and its TCP figure unless TCP was skipped.
    pub fn complete(&self) -> bool {
        self.cells.iter().all(|c| c.pps.is_some() && (self.params.tcp_seconds == 0 || c.tcp_gbps.is_some()))
    }
}

/// switch/kernel of the 64-byte rate in each round where both were measured.
fn per_round(samples: &[Sample], sw: Setup, k: Setup) -> Vec<f64> {
    let pps = |setup: Setup, round: u32| samples.iter().find(|s| s.setup == setup && s.round == round).and_then(|s| s.udp_64.as_ref()).map(|r| r.pps);
    let mut rounds: Vec<u32> = samples.iter().map(|s| s.round).collect();
    rounds.dedup();
    rounds.into_iter().filter_map(|r| ratio(pps(sw, r), pps(k, r))).collect()
}

pub fn summarize(samples: Vec<Sample>, params: Params, env: Env, notes: Vec<String>, started_utc: String, elapsed: f64) -> Summary {
    let mut cells = Vec::new();
    for &setup in &params.setups {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.setup == setup).collect();
        let pps: Vec<u64> = mine.iter().filter_map(|s| s.udp_64.as_ref().map(|r| r.pps)).collect();
        let offered: Vec<u64> = mine.iter().filter_map(|s| s.udp_64.as_ref().map(|r| r.offered_pps)).collect();
        let us: Vec<f64> = mine.iter().filter_map(|s| s.udp_64.as_ref().and_then(|r| r.cpu_ns_per_pkt)).map(|n| n / 1e3).collect();
        let busy: Vec<f64> = mine.iter().filter_map(|s| s.udp_64.as_ref().and_then(|r| r.core_busy.get(params.fwd_core).copied())).collect();
        let ndr: Vec<u64> = mine.iter().filter_map(|s| s.ndr_64.as_ref().and_then(|n| n.ndr_pps)).collect();
        let tcp: Vec<f64> = mine.iter().filter_map(|s| s.tcp.as_ref().map(|r| r.gbps)).collect();
        let retr: Vec<u64> = mine.iter().filter_map(|s| s.tcp.as_ref().map(|r| r.retransmits)).collect();
        let ready: Vec<f64> = mine.iter().filter_map(|s| s.switch_ready_s).collect();
        let unsaturated = |r: &RateResult| {
            r.lost as f64 <= r.sent as f64 * UNSATURATED_LOSS && r.core_busy.get(params.fwd_core).is_some_and(|&b| b < UNSATURATED_BUSY)
        };
        let lower = mine.iter().filter(|s| s.udp_64.as_ref().is_some_and(unsaturated)).count() * 2 > mine.len();
        cells.push(Cell {
            setup,
            rounds_ok: pps.len(),
            pps: med_u(&pps),
            pps_per_round: pps,
            pps_lower_bound: lower,
            offered_pps: med_u(&offered),
            ndr_pps: med_u(&ndr),
            ndr_lower_bound: mine.iter().filter(|s| s.ndr_64.as_ref().is_some_and(|n| n.generator_limited)).count() * 2 > mine.len(),
            ndr_per_round: mine.iter().map(|s| s.ndr_64.as_ref().and_then(|n| n.ndr_pps)).collect(),
            fwd_core_us_per_pkt: median(&us).map(|x| round_to(x, 3)),
            fwd_core_busy: median(&busy).map(|x| round_to(x, 3)),
            tcp_gbps: median(&tcp).map(|x| round_to(x, 3)),
            tcp_gbps_per_round: tcp,
            tcp_retransmits: med_u(&retr),
            switch_ready_s: median(&ready).map(|x| round_to(x, 2)),
        });
    }
    let pps = |s: Setup| cells.iter().find(|c| c.setup == s).and_then(|c| c.pps);
    let ndr = |s: Setup| cells.iter().find(|c| c.setup == s).and_then(|c| c.ndr_pps);
    let gbps = |s: Setup| cells.iter().find(|c| c.setup == s).and_then(|c| c.tcp_gbps);
    Summary {
        switch_vxlan_pps: pps(Setup::SwitchVxlan),
        kernel_vxlan_pps: pps(Setup::KernelVxlan),
        switch_routed_pps: pps(Setup::SwitchRouted),
        kernel_routed_pps: pps(Setup::KernelRouted),
        switch_vxlan_tcp_gbps: gbps(Setup::SwitchVxlan),
        kernel_vxlan_tcp_gbps: gbps(Setup::KernelVxlan),
        switch_routed_tcp_gbps: gbps(Setup::SwitchRouted),
        kernel_routed_tcp_gbps: gbps(Setup::KernelRouted),
        switch_vxlan_ndr_pps: ndr(Setup::SwitchVxlan),
        kernel_vxlan_ndr_pps: ndr(Setup::KernelVxlan),
        switch_routed_ndr_pps: ndr(Setup::SwitchRouted),
        kernel_routed_ndr_pps: ndr(Setup::KernelRouted),
        vxlan_pps_ratio: ratio(pps(Setup::SwitchVxlan), pps(Setup::KernelVxlan)),
        routed_pps_ratio: ratio(pps(Setup::SwitchRouted), pps(Setup::KernelRouted)),
        vxlan_tcp_ratio: fratio(gbps(Setup::SwitchVxlan), gbps(Setup::KernelVxlan)),
        routed_tcp_ratio: fratio(gbps(Setup::SwitchRouted), gbps(Setup::KernelRouted)),
        vxlan_ndr_ratio: ratio(ndr(Setup::SwitchVxlan), ndr(Setup::KernelVxlan)),
        routed_ndr_ratio: ratio(ndr(Setup::SwitchRouted), ndr(Setup::KernelRouted)),
        vxlan_pps_ratio_per_round: per_round(&samples, Setup::SwitchVxlan, Setup::KernelVxlan),
        routed_pps_ratio_per_round: per_round(&samples, Setup::SwitchRouted, Setup::KernelRouted),
        rounds: params.rounds,
        cells,
        params,
        env,
        samples,
        notes,
        stamp: Stamp::new(started_utc, elapsed),
    }
}

const LOWER_BOUND: &str = "(≥ on a UDP rate: nothing lost and the forwarding core under 90% busy in most rounds: the generator, throttled by the path's backpressure, was the limit; on a highest rate: the search's first trial, at its ceiling, passed; either figure is then a lower bound)";

const HEAD: [&str; 9] =
    ["setup", "pod MTU", "64 B UDP pps", "offered pps", "fwd core µs/pkt", "highest rate, ≤tol. lost", "TCP Gbit/s", "TCP retransmits", "switch/kernel pps, rate, TCP"];

fn rows(s: &Summary) -> Vec<[String; 9]> {
    s.cells
        .iter()
        .map(|c| {
            let vs = match c.setup {
                Setup::SwitchVxlan => format!("{}, {}, {}", of(s.vxlan_pps_ratio, 2), of(s.vxlan_ndr_ratio, 2), of(s.vxlan_tcp_ratio, 2)),
                Setup::SwitchRouted => format!("{}, {}, {}", of(s.routed_pps_ratio, 2), of(s.routed_ndr_ratio, 2), of(s.routed_tcp_ratio, 2)),
                _ => String::new(),
            };
            [
                c.setup.title().to_string(),
                c.setup.pod_mtu().to_string(),
                if c.pps_lower_bound { format!("≥{}", ot(c.pps)) } else { ot(c.pps) },
                ot(c.offered_pps),
                of(c.fwd_core_us_per_pkt, 2),
                if c.ndr_lower_bound { format!("≥{}", ot(c.ndr_pps)) } else { ot(c.ndr_pps) },
                of(c.tcp_gbps, 2),
                ot(c.tcp_retransmits),
                vs,
            ]
        })
        .collect()
}

fn headline(s: &Summary) -> Vec<String> {
    let verdict = verdict(s.vxlan_pps_ratio, |r| r >= VXLAN_PPS_TARGET);
    vec![
        format!(
            "switch/kernel VXLAN, 64 B UDP: {} ({} vs {} pps; per round {:?}) — target ≥ {VXLAN_PPS_TARGET}: {verdict}",
            of(s.vxlan_pps_ratio, 2),
            ot(s.switch_vxlan_pps),
            ot(s.kernel_vxlan_pps),
            s.vxlan_pps_ratio_per_round
        ),
        format!(
            "switch/kernel routed, 64 B UDP: {} ({} vs {} pps; per round {:?})",
            of(s.routed_pps_ratio, 2),
            ot(s.switch_routed_pps),
            ot(s.kernel_routed_pps),
            s.routed_pps_ratio_per_round
        ),
        format!(
            "switch/kernel, highest rate with ≤{}% lost (RFC 2544 search from {} pps, {} s trials): VXLAN {} ({} vs {} pps), routed {} ({} vs {} pps)",
            s.params.ndr_loss_tolerance * 100.0,
            thousands(s.params.ndr_max_rate),
            s.params.ndr_trial_s,
            of(s.vxlan_ndr_ratio, 2),
            ot(s.switch_vxlan_ndr_pps),
            ot(s.kernel_vxlan_ndr_pps),
            of(s.routed_ndr_ratio, 2),
            ot(s.switch_routed_ndr_pps),
            ot(s.kernel_routed_ndr_pps)
        ),
        format!(
            "switch/kernel one TCP stream: VXLAN {} ({} vs {} Gbit/s), routed {} ({} vs {} Gbit/s)",
            of(s.vxlan_tcp_ratio, 2),
            of(s.switch_vxlan_tcp_gbps, 2),
            of(s.kernel_vxlan_tcp_gbps, 2),
            of(s.routed_tcp_ratio, 2),
            of(s.switch_routed_tcp_gbps, 2),
            of(s.kernel_routed_tcp_gbps, 2)
        ),
    ]
}

fn setup_line(s: &Summary) -> String {
    let p = &s.params;
    format!(
        "{} round(s), setups interleaved (order rotating), medians; pktgen (AF_XDP) and iperf3 on core {}, forwarding (both switches' workers{}, or the kernel via RPS, both nodes) on core {}; {} UDP flows offered at {}, {} s UDP runs, {} s TCP stream; load average {} -> {}",
        p.rounds,
        p.gen_core,
        if p.busy_poll { ", busy-polling" } else { "" },
        p.fwd_core,
        p.flows,
        p.udp_rate.map_or_else(|| "pktgen's maximum".to_string(), |r| format!("{} frames/s", thousands(r))),
        p.duration_s,
        p.tcp_seconds,
        s.env.host.loadavg_start,
        s.env.host.loadavg_end
    )
}

/// The readable report (stdout without --json).
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\ncrossnode: pod -> pod on another node; {}\n", setup_line(s));
    let _ = writeln!(o, "{LOWER_BOUND}\n");
    o.push_str(&padded(&HEAD, &rows(s), &[0]));
    o.push('\n');
    for l in headline(s) {
        let _ = writeln!(o, "{l}");
    }
    o.push_str(&section("\nnotes:\n", "  ", &s.notes));
    for x in s.samples.iter().filter(|x| !x.errors.is_empty()) {
        for e in &x.errors {
            let _ = writeln!(o, "ERROR round {} {}: {e}", x.round, x.setup.name());
        }
    }
    o
}

pub fn markdown(s: &Summary) -> String {
    let mut o = heading("crossnode");
    let _ = writeln!(o, "{}; {}", run_line(&s.stamp, &s.env.host), s.env.iperf3);
    let _ = writeln!(o, "- {}", setup_line(s));
    let _ = writeln!(
        o,
        "- Two node namespaces on a direct veth underlay (172.19.0.0/24), one pod each; pods' MTU {VXLAN_POD_MTU} under VXLAN, {ROUTED_POD_MTU} routed; pods' TX checksum offload off in every setup (as podswitch needs it)\n"
    );
    let _ = writeln!(o, "{LOWER_BOUND}\n");
    o.push_str(&markdown_table(&HEAD, &rows(s), &[0]));
    o.push('\n');
    o.push_str(&section("", "- ", headline(s)));
    o.push_str("\n## Per round\n\n");
    let head = ["round", "setup", "64 B pps", "offered", "lost", "fwd core busy", "fwd core µs/pkt", "highest rate ≤tol. lost (trials)", "TCP Gbit/s", "retransmits", "switches ready s"];
    let per_round = |x: &Sample| {
        let u = x.udp_64.as_ref();
        [
            x.round.to_string(),
            x.setup.name().to_string(),
            ot(u.map(|r| r.pps)),
            ot(u.map(|r| r.offered_pps)),
            ot(u.map(|r| r.lost)),
            of(u.and_then(|r| r.core_busy.get(s.params.fwd_core).copied()), 2),
            of(u.and_then(|r| r.cpu_ns_per_pkt).map(|n| n / 1e3), 2),
            x.ndr_64.as_ref().map_or_else(|| "-".into(), |n| format!("{} ({})", ot(n.ndr_pps), n.trials)),
            of(x.tcp.as_ref().map(|t| t.gbps), 2),
            ot(x.tcp.as_ref().map(|t| t.retransmits)),
            of(x.switch_ready_s, 2),
        ]
    };
    o.push_str(&markdown_table(&head, &s.samples.iter().map(per_round).collect::<Vec<_>>(), &[1]));
    let errs: Vec<String> = s.samples.iter().flat_map(|x| x.errors.iter().map(move |e| format!("round {} {}: {e}", x.round, x.setup.name()))).collect();
    o.push_str(&section("\n## Notes and errors\n\n", "- ", s.notes.iter().chain(&errs).map(|n| n.replace('\n', " "))));
    o
}

/// The result files: `crossnode.json` and `crossnode.md`.
pub fn files(s: &Summary) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![("crossnode.json", crate::harness::report::json(s)?), ("crossnode.md", markdown(s))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::host::Host;
    use crate::harness::pktgen::NdrResult;

    fn sample(round: u32, setup: Setup, pps: u64, gbps: f64) -> Sample {
        let r = RateResult { pps, offered_pps: 1_000_000, sent: 0, received: pps, lost: 0, mean_frame_bytes: 64.0, cpu_ns_per_pkt: None, cpu_util: None, core_busy: vec![] };
        let t = super::super::tcp::TcpResult { gbps, sender_gbps: gbps, retransmits: 0, seconds: 10.0 };
        Sample { round, setup, udp_64: Some(r), ndr_64: None, tcp: Some(t), switch_ready_s: None, errors: vec![] }
    }

    #[test]
    fn headline_keys_come_first_in_order_and_ratios_are_switch_over_kernel() {
        let params = Params { rounds: 2, setups: Setup::ALL.to_vec(), duration_s: 3.0, tcp_seconds: 10, flows: 256, gen_core: 0, fwd_core: 1, busy_poll: false, udp_rate: None, ndr_trial_s: 1.0, ndr_max_rate: 1_200_000, ndr_loss_tolerance: 0.001, ndr_resolution: 0.02 };
        let env = Env { host: Host { online_cpus: 2, ..Host::default() }, iperf3: String::new() };
        let ndr = |mut x: Sample, pps: u64| {
            x.ndr_64 = Some(NdrResult { ndr_pps: Some(pps), generator_limited: false, trials: 8, p50_ns_at_ndr: None, p99_ns_at_ndr: None });
            x
        };
        let samples = vec![
            ndr(sample(1, Setup::SwitchVxlan, 300, 2.0), 600),
            ndr(sample(1, Setup::KernelVxlan, 200, 4.0), 500),
            sample(1, Setup::SwitchRouted, 400, 3.0),
            sample(1, Setup::KernelRouted, 400, 3.0),
            sample(2, Setup::SwitchVxlan, 500, 2.0),
            sample(2, Setup::KernelVxlan, 200, 4.0),
        ];
        let s = summarize(samples, params, env, vec![], String::new(), 1.0);
        let json = serde_json::to_string(&s).unwrap();
        let keys = ["switch_vxlan_pps", "kernel_vxlan_pps", "switch_routed_pps", "kernel_routed_pps", "switch_vxlan_tcp_gbps", "kernel_vxlan_tcp_gbps"];
        let mut at = 0;
        for k in keys {
            let i = json.find(&format!("\"{k}\":")).unwrap_or_else(|| panic!("{k} missing"));
            assert!(i >= at, "{k} out of order");
            at = i;
        }
        assert!(json.starts_with("{\"switch_vxlan_pps\":400,\"kernel_vxlan_pps\":200,"));
        assert_eq!(s.vxlan_pps_ratio, Some(2.0));
        assert_eq!(s.vxlan_pps_ratio_per_round, vec![1.5, 2.5]);
        assert_eq!(s.vxlan_tcp_ratio, Some(0.5));
        assert_eq!((s.switch_vxlan_ndr_pps, s.vxlan_ndr_ratio, s.routed_ndr_ratio), (Some(600), Some(1.2), None));
        assert_eq!(s.routed_pps_ratio_per_round, vec![1.0]);
        assert!(s.complete());
        assert!(table(&s).contains("target ≥ 1.3: met"));
        assert!(!s.cells.iter().any(|c| c.pps_lower_bound), "no core load recorded: nothing is a lower bound");
    }

    #[test]
    fn a_lossless_run_with_a_spare_forwarding_core_is_a_lower_bound() {
        let params = Params { rounds: 1, setups: vec![Setup::KernelRouted, Setup::KernelVxlan], duration_s: 3.0, tcp_seconds: 0, flows: 256, gen_core: 0, fwd_core: 1, busy_poll: false, udp_rate: None, ndr_trial_s: 1.0, ndr_max_rate: 1_200_000, ndr_loss_tolerance: 0.001, ndr_resolution: 0.02 };
        let env = Env { host: Host { online_cpus: 2, ..Host::default() }, iperf3: String::new() };
        let mut spare = sample(1, Setup::KernelRouted, 700, 0.0);
        spare.udp_64.as_mut().unwrap().core_busy = vec![1.0, 0.85];
        spare.tcp = None;
        let mut busy = sample(1, Setup::KernelVxlan, 500, 0.0);
        busy.udp_64.as_mut().unwrap().core_busy = vec![1.0, 0.95];
        busy.tcp = None;
        let s = summarize(vec![spare, busy], params, env, vec![], String::new(), 1.0);
        assert!(s.cells[0].pps_lower_bound);
        assert!(!s.cells[1].pps_lower_bound);
        assert!(markdown(&s).contains("| ≥700 |"));
        assert!(s.complete(), "TCP skipped: the UDP figures complete the run");
    }
}
