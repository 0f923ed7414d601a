//! The cni result: per setup the ADD-to-first-packet percentiles over every pod of every
//! round, the create and delete rates (medians over rounds), the podswitch/ptp ratios, the
//! readable table and the markdown report.
//!
//! Contract: [`Summary`]'s field order is the JSON key order; the headline keys come first
//! (`add_p50_ms`, `add_p99_ms`, `pods_per_s`, `del_pods_per_s` of podswitch, then the same of
//! ptp prefixed `ptp_`, then the ratios podswitch/ptp `add_p50_ratio`, `add_p99_ratio`,
//! `pods_per_s_ratio`, `del_pods_per_s_ratio`), `null` when a figure is missing.
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::setups::Setup;
use super::{Env, Params, Sample};
use crate::harness::host::Stamp;
use crate::harness::report::{heading, markdown_table, padded, run_line, section, verdict};
use crate::stats::{median, opt_fixed as of, percentile, ratio_f as fratio, round_to};

/// The target: podswitch's ADD-to-first-packet p99 at most this times ptp's.
pub const ADD_P99_TARGET: f64 = 1.5;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub setup: Setup,
    pub pods_ok: usize,
    /// Pods asked for (rounds run × `--pods`) that did not get through, tried or not.
    pub pods_failed: usize,
    /// ADD start to first packet at the peer, over every pod of every round, ms.
    pub add_p50_ms: Option<f64>,
    pub add_p99_ms: Option<f64>,
    pub add_max_ms: Option<f64>,
    /// ADD start to the plugin's exit, ms.
    pub add_return_p50_ms: Option<f64>,
    pub add_return_p99_ms: Option<f64>,
    /// Medians over rounds.
    pub pods_per_s: Option<f64>,
    pub del_pods_per_s: Option<f64>,
    pub pods_per_s_per_round: Vec<f64>,
    pub del_pods_per_s_per_round: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub add_p50_ms: Option<f64>,
    pub add_p99_ms: Option<f64>,
    pub pods_per_s: Option<f64>,
    pub del_pods_per_s: Option<f64>,
    pub ptp_add_p50_ms: Option<f64>,
    pub ptp_add_p99_ms: Option<f64>,
    pub ptp_pods_per_s: Option<f64>,
    pub ptp_del_pods_per_s: Option<f64>,
    /// podswitch/ptp; the target is `add_p99_ratio` ≤ [`ADD_P99_TARGET`].
    pub add_p50_ratio: Option<f64>,
    pub add_p99_ratio: Option<f64>,
    pub pods_per_s_ratio: Option<f64>,
    pub del_pods_per_s_ratio: Option<f64>,
    pub add_p99_target_ratio: f64,
    pub cells: Vec<Cell>,
    pub params: Params,
    pub env: Env,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub stamp: Stamp,
}

impl Summary {
    /// Every setup asked for ran in every round and every pod got through.
    pub fn complete(&self) -> bool {
        self.cells.iter().all(|c| c.pods_failed == 0 && c.pods_ok == (self.params.pods * self.params.rounds) as usize)
    }
}

fn r3(x: Option<f64>) -> Option<f64> {
    x.map(|v| round_to(v, 3))
}

pub fn summarize(samples: Vec<Sample>, params: Params, env: Env, notes: Vec<String>, started_utc: String, elapsed: f64) -> Summary {
    let mut cells = Vec::new();
    for &setup in &params.setups {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.setup == setup).collect();
        let first: Vec<f64> = mine.iter().flat_map(|s| s.pods.iter().filter_map(|p| p.first_packet_ms)).collect();
        let ret: Vec<f64> = mine.iter().flat_map(|s| s.pods.iter().filter_map(|p| p.add_return_ms)).collect();
        let rate: Vec<f64> = mine.iter().filter_map(|s| s.pods_per_s).collect();
        let del: Vec<f64> = mine.iter().filter_map(|s| s.del_pods_per_s).collect();
        let asked = mine.len() * params.pods as usize;
        cells.push(Cell {
            setup,
            pods_ok: first.len(),
            pods_failed: asked.saturating_sub(first.len()),
            add_p50_ms: r3(percentile(&first, 50.0)),
            add_p99_ms: r3(percentile(&first, 99.0)),
            add_max_ms: r3(percentile(&first, 100.0)),
            add_return_p50_ms: r3(percentile(&ret, 50.0)),
            add_return_p99_ms: r3(percentile(&ret, 99.0)),
            pods_per_s: median(&rate).map(|x| round_to(x, 2)),
            del_pods_per_s: median(&del).map(|x| round_to(x, 2)),
            pods_per_s_per_round: rate,
            del_pods_per_s_per_round: del,
        });
    }
    let cell = |s: Setup| cells.iter().find(|c| c.setup == s);
    let get = |s: Setup, f: fn(&Cell) -> Option<f64>| cell(s).and_then(f);
    let (ps, ptp) = (Setup::Podswitch, Setup::Ptp);
    Summary {
        add_p50_ms: get(ps, |c| c.add_p50_ms),
        add_p99_ms: get(ps, |c| c.add_p99_ms),
        pods_per_s: get(ps, |c| c.pods_per_s),
        del_pods_per_s: get(ps, |c| c.del_pods_per_s),
        ptp_add_p50_ms: get(ptp, |c| c.add_p50_ms),
        ptp_add_p99_ms: get(ptp, |c| c.add_p99_ms),
        ptp_pods_per_s: get(ptp, |c| c.pods_per_s),
        ptp_del_pods_per_s: get(ptp, |c| c.del_pods_per_s),
        add_p50_ratio: fratio(get(ps, |c| c.add_p50_ms), get(ptp, |c| c.add_p50_ms)),
        add_p99_ratio: fratio(get(ps, |c| c.add_p99_ms), get(ptp, |c| c.add_p99_ms)),
        pods_per_s_ratio: fratio(get(ps, |c| c.pods_per_s), get(ptp, |c| c.pods_per_s)),
        del_pods_per_s_ratio: fratio(get(ps, |c| c.del_pods_per_s), get(ptp, |c| c.del_pods_per_s)),
        add_p99_target_ratio: ADD_P99_TARGET,
        cells,
        params,
        env,
        samples,
        notes,
        stamp: Stamp::new(started_utc, elapsed),
    }
}

const HEAD: [&str; 8] = [
    "setup",
    "pods through",
    "ADD→first packet p50 ms",
    "p99 ms",
    "max ms",
    "ADD returned p50 / p99 ms",
    "created pods/s",
    "deleted pods/s",
];

fn rows(s: &Summary) -> Vec<[String; 8]> {
    s.cells
        .iter()
        .map(|c| {
            [
                c.setup.title().to_string(),
                format!("{}/{}", c.pods_ok, c.pods_ok + c.pods_failed),
                of(c.add_p50_ms, 1),
                of(c.add_p99_ms, 1),
                of(c.add_max_ms, 1),
                format!("{} / {}", of(c.add_return_p50_ms, 1), of(c.add_return_p99_ms, 1)),
                of(c.pods_per_s, 1),
                of(c.del_pods_per_s, 1),
            ]
        })
        .collect()
}

fn headline(s: &Summary) -> Vec<String> {
    let verdict = verdict(s.add_p99_ratio, |r| r <= ADD_P99_TARGET);
    vec![
        format!(
            "podswitch/ptp, ADD to first packet: p99 {} ({} vs {} ms) — target ≤ {ADD_P99_TARGET}: {verdict}; p50 {} ({} vs {} ms)",
            of(s.add_p99_ratio, 2),
            of(s.add_p99_ms, 1),
            of(s.ptp_add_p99_ms, 1),
            of(s.add_p50_ratio, 2),
            of(s.add_p50_ms, 1),
            of(s.ptp_add_p50_ms, 1)
        ),
        format!(
            "podswitch/ptp, pods per second: created {} ({} vs {}), deleted {} ({} vs {})",
            of(s.pods_per_s_ratio, 2),
            of(s.pods_per_s, 1),
            of(s.ptp_pods_per_s, 1),
            of(s.del_pods_per_s_ratio, 2),
            of(s.del_pods_per_s, 1),
            of(s.ptp_del_pods_per_s, 1)
        ),
    ]
}

fn setup_line(s: &Summary) -> String {
    let p = &s.params;
    format!(
        "{} round(s) of {} pods per setup, setups interleaved (order rotating), one ADD (and one DEL) at a time; percentiles over all pods of all rounds, rates medians over rounds; a pod sends a UDP datagram to the peer pod every {} µs {} (the clock starts at the ADD's start); switch worker on core {} ({}); load average {} -> {}",
        p.rounds, p.pods, p.send_every_us, p.send_from.says(), p.switch_core,
        p.switch_frames.map_or_else(|| "the switch's default UMEM frames".into(), |f| format!("--frames {f}")), s.env.host.loadavg_start, s.env.host.loadavg_end
    )
}

fn errors(s: &Summary) -> Vec<String> {
    s.samples.iter().flat_map(|x| x.errors.iter().map(move |e| format!("round {} {}: {e}", x.round, x.setup.name()))).collect()
}

/// The readable report (stdout without --json).
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\ncni: ADD to first packet forwarded, pods per second; {}\n", setup_line(s));
    o.push_str(&padded(&HEAD, &rows(s), &[0]));
    o.push('\n');
    for l in headline(s) {
        let _ = writeln!(o, "{l}");
    }
    o.push_str(&section("\nnotes:\n", "  ", &s.notes));
    for e in errors(s) {
        let _ = writeln!(o, "ERROR {e}");
    }
    o
}

pub fn markdown(s: &Summary) -> String {
    let mut o = heading("cni");
    let _ = writeln!(
        o,
        "{}; containernetworking-plugins {}",
        run_line(&s.stamp, &s.env.host),
        if s.env.reference_plugins.is_empty() { "?" } else { &s.env.reference_plugins }
    );
    let _ = writeln!(o, "- {}", setup_line(s));
    let _ = writeln!(
        o,
        "- Same namespaces for both: a node namespace (plugins run there, as a runtime would), a peer pod and {} pod sandboxes; host-local over {}, MTU {}, CNI {}\n",
        s.params.pods, s.params.pod_range, s.params.mtu, s.params.cni_version
    );
    o.push_str(&markdown_table(&HEAD, &rows(s), &[0]));
    o.push('\n');
    o.push_str(&section("", "- ", headline(s)));
    o.push_str("\n## Per round\n\n");
    let head = ["round", "setup", "pods through", "ADD→first packet p50 ms", "p99 ms", "max ms", "ADD returned p50 / p99 ms", "create s", "created pods/s", "delete s", "deleted pods/s"];
    let per_round = |x: &Sample| {
        [
            x.round.to_string(),
            x.setup.name().to_string(),
            format!("{}/{}", x.pods_ok, s.params.pods),
            of(x.first_packet.p50_ms, 1),
            of(x.first_packet.p99_ms, 1),
            of(x.first_packet.max_ms, 1),
            format!("{} / {}", of(x.add_return.p50_ms, 1), of(x.add_return.p99_ms, 1)),
            of(x.create_s, 2),
            of(x.pods_per_s, 1),
            of(x.delete_s, 2),
            of(x.del_pods_per_s, 1),
        ]
    };
    o.push_str(&markdown_table(&head, &s.samples.iter().map(per_round).collect::<Vec<_>>(), &[1]));
    let errs = errors(s);
    o.push_str(&section("\n## Notes and errors\n\n", "- ", s.notes.iter().chain(&errs).map(|n| n.replace('\n', " "))));
    o
}

/// The result files: `cni.json` and `cni.md`.
pub fn files(s: &Summary) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![("cni.json", crate::harness::report::json(s)?), ("cni.md", markdown(s))])
}

#[cfg(test)]
mod tests {
    use super::super::PodTimes;
    use crate::harness::host::Host;
    use super::*;

    fn sample(round: u32, setup: Setup, first: &[f64], rate: f64) -> Sample {
        Sample {
            round,
            setup,
            pods: first.iter().map(|&f| PodTimes { first_packet_ms: Some(f), add_return_ms: Some(f / 2.0) }).collect(),
            first_packet: super::super::Spread::of(first),
            add_return: super::super::Spread::default(),
            create_s: Some(1.0),
            delete_s: Some(1.0),
            pods_ok: first.len(),
            pods_per_s: Some(rate),
            del_pods_per_s: Some(rate * 2.0),
            errors: vec![],
        }
    }

    fn params(rounds: u32, pods: u32) -> Params {
        Params { pods, rounds, setups: Setup::ALL.to_vec(), first_packet_timeout_s: 20.0, send_every_us: 200, send_from: super::super::SendFrom::Start, switch_core: 1, switch_frames: None, cni_version: "1.0.0", pod_range: "10.244.0.0/16", mtu: 1500 }
    }

    fn env() -> Env {
        Env { host: Host { online_cpus: 2, ..Host::default() }, reference_plugins: String::new() }
    }

    #[test]
    fn headline_keys_come_first_and_ratios_are_podswitch_over_ptp() {
        let samples = vec![
            sample(1, Setup::Podswitch, &[10.0, 20.0], 40.0),
            sample(1, Setup::Ptp, &[10.0, 10.0], 50.0),
            sample(2, Setup::Ptp, &[5.0, 10.0], 30.0),
            sample(2, Setup::Podswitch, &[15.0, 30.0], 60.0),
        ];
        let s = summarize(samples, params(2, 2), env(), vec![], String::new(), 1.0);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.starts_with("{\"add_p50_ms\":15.0,\"add_p99_ms\":30.0,\"pods_per_s\":50.0,\"del_pods_per_s\":100.0,\"ptp_add_p50_ms\":10.0,\"ptp_add_p99_ms\":10.0,\"ptp_pods_per_s\":40.0,"), "{json}");
        assert_eq!((s.add_p50_ratio, s.add_p99_ratio, s.pods_per_s_ratio), (Some(1.5), Some(3.0), Some(1.25)));
        assert!(s.complete());
        assert!(table(&s).contains("target ≤ 1.5: NOT met"));
        assert_eq!(s.cells[0].add_return_p99_ms, Some(15.0));
    }

    #[test]
    fn a_pod_that_never_got_through_makes_the_run_incomplete_and_is_not_a_latency() {
        let mut ps = sample(1, Setup::Podswitch, &[10.0], 10.0);
        ps.pods.push(PodTimes { first_packet_ms: None, add_return_ms: Some(3.0) });
        ps.errors.push("pod-1: no packet".into());
        let s = summarize(vec![ps, sample(1, Setup::Ptp, &[10.0, 12.0], 10.0)], params(1, 2), env(), vec![], String::new(), 1.0);
        assert_eq!((s.cells[0].pods_ok, s.cells[0].pods_failed, s.add_p99_ms), (1, 1, Some(10.0)));
        assert!(!s.complete());
        assert!(markdown(&s).contains("round 1 podswitch: pod-1: no packet"));
    }
}
