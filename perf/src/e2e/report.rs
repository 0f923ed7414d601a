//! The e2e result: medians over rounds per (forwarder, path), the ratios the issue asks for,
//! the readable table, the markdown report and two SVG bar charts (64-byte / IMIX rate and
//! no-drop rate per path; CPU per packet), written by hand (self-contained, no scripts).
//!
//! Contract: [`Summary`]'s field order is the JSON key order; the four headline keys come
//! first (`switch_svc_pps`, `kernel_nft_pps`, `switch_fwd_pps`, `ovs_afxdp_pps`: 64-byte
//! medians of pod -> ClusterIP for switch and kernel, pod -> pod for switch and OVS), `null` when
//! a figure is missing.
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::{E2eArgs, Env, Fwd, PathKind, Sample, Setup};
use crate::harness::pktgen::RateResult;
use crate::harness::host::Stamp;
use crate::harness::report::{heading, markdown_table, padded, run_line, section, verdict};
use crate::stats::{median, median_u64 as med_u, opt_fixed as of, opt_thousands as ot, ratio, round_to, thousands};

/// A rate run that lost at most this share of what was sent did not saturate the forwarder.
const UNSATURATED_LOSS: f64 = 0.001;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub fwd: Fwd,
    pub path: PathKind,
    pub rounds_ok: usize,
    pub pps_64: Option<u64>,
    /// The forwarder lost nothing at the generator's maximum in most rounds: the 64-byte
    /// figure is what the generator offered, a lower bound of the forwarder's capacity.
    pub pps_64_lower_bound: bool,
    pub pps_64_per_round: Vec<u64>,
    pub offered_64: Option<u64>,
    pub pps_imix: Option<u64>,
    pub pps_imix_lower_bound: bool,
    pub gbps_imix: Option<f64>,
    pub ndr_64: Option<u64>,
    /// The search's first trial (at 1.1x the offered rate of the rate run) passed in most rounds: a lower bound.
    pub ndr_lower_bound: bool,
    pub ndr_per_round: Vec<Option<u64>>,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub latency_lost: Option<u64>,
    pub cpu_us_per_pkt_64: Option<f64>,
    pub cpu_us_per_pkt_imix: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub switch_svc_pps: Option<u64>,
    pub kernel_nft_pps: Option<u64>,
    pub switch_fwd_pps: Option<u64>,
    pub ovs_afxdp_pps: Option<u64>,
    /// switch/kernel on pod -> ClusterIP (64 B); done means >= 1.
    pub switch_vs_kernel_svc: Option<f64>,
    /// switch/OVS on pod -> pod (64 B); done means >= 1.
    pub switch_vs_ovs_fwd: Option<f64>,
    /// Every per-path ratio: "path metric" -> switch/kernel and switch/ovs.
    pub ratios: Vec<Ratio>,
    pub cells: Vec<Cell>,
    pub setup: Setup,
    pub env: Env,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
    #[serde(flatten)]
    pub stamp: Stamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub path: PathKind,
    pub metric: &'static str,
    pub switch_vs_kernel: Option<f64>,
    pub switch_vs_ovs: Option<f64>,
}

impl Summary {
    pub fn cell(&self, f: Fwd, p: PathKind) -> Option<&Cell> {
        self.cells.iter().find(|c| c.fwd == f && c.path == p)
    }

    /// Whether the four headline figures exist (for the exit status).
    pub fn headline_complete(&self) -> bool {
        self.switch_svc_pps.is_some() && self.kernel_nft_pps.is_some() && self.switch_fwd_pps.is_some() && self.ovs_afxdp_pps.is_some()
    }
}

pub fn summarize(args: &E2eArgs, samples: Vec<Sample>, setup: Setup, env: Env, notes: Vec<String>, started_utc: String, elapsed: f64) -> Summary {
    let mut cells = Vec::new();
    for &f in &args.forwarders {
        for &p in &args.paths {
            if f == Fwd::Ovs && p != PathKind::PodPod {
                continue;
            }
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.fwd == f && s.path == p).collect();
            let r64: Vec<u64> = mine.iter().filter_map(|s| s.rate_64.as_ref().map(|r| r.pps)).collect();
            let off: Vec<u64> = mine.iter().filter_map(|s| s.rate_64.as_ref().map(|r| r.offered_pps)).collect();
            let imix: Vec<u64> = mine.iter().filter_map(|s| s.rate_imix.as_ref().map(|r| r.pps)).collect();
            let gbps: Vec<f64> = mine.iter().filter_map(|s| s.rate_imix.as_ref().map(|r| r.pps as f64 * r.mean_frame_bytes * 8.0 / 1e9)).collect();
            let ndr: Vec<u64> = mine.iter().filter_map(|s| s.ndr_64.as_ref().and_then(|n| n.ndr_pps)).collect();
            let p50: Vec<f64> = mine.iter().filter_map(|s| s.latency_64.as_ref().map(|l| l.p50_ns as f64 / 1e3)).collect();
            let p99: Vec<f64> = mine.iter().filter_map(|s| s.latency_64.as_ref().map(|l| l.p99_ns as f64 / 1e3)).collect();
            let lost: Vec<u64> = mine.iter().filter_map(|s| s.latency_64.as_ref().map(|l| l.lost)).collect();
            let c64: Vec<f64> = mine.iter().filter_map(|s| s.rate_64.as_ref().and_then(|r| r.cpu_ns_per_pkt)).map(|n| n / 1e3).collect();
            let cim: Vec<f64> = mine.iter().filter_map(|s| s.rate_imix.as_ref().and_then(|r| r.cpu_ns_per_pkt)).map(|n| n / 1e3).collect();
            let majority = |n: usize| n * 2 > mine.len();
            let unsaturated = |r: &RateResult| r.lost as f64 <= r.sent as f64 * UNSATURATED_LOSS;
            cells.push(Cell {
                fwd: f,
                path: p,
                rounds_ok: r64.len(),
                pps_64: med_u(&r64),
                pps_64_lower_bound: majority(mine.iter().filter(|s| s.rate_64.as_ref().is_some_and(unsaturated)).count()),
                pps_64_per_round: r64.clone(),
                offered_64: med_u(&off),
                pps_imix: med_u(&imix),
                pps_imix_lower_bound: majority(mine.iter().filter(|s| s.rate_imix.as_ref().is_some_and(unsaturated)).count()),
                gbps_imix: median(&gbps).map(|x| round_to(x, 3)),
                ndr_64: med_u(&ndr),
                ndr_lower_bound: majority(mine.iter().filter(|s| s.ndr_64.as_ref().is_some_and(|n| n.generator_limited)).count()),
                ndr_per_round: mine.iter().map(|s| s.ndr_64.as_ref().and_then(|n| n.ndr_pps)).collect(),
                latency_p50_us: median(&p50).map(|x| round_to(x, 1)),
                latency_p99_us: median(&p99).map(|x| round_to(x, 1)),
                latency_lost: lost.iter().copied().max(),
                cpu_us_per_pkt_64: median(&c64).map(|x| round_to(x, 3)),
                cpu_us_per_pkt_imix: median(&cim).map(|x| round_to(x, 3)),
            });
        }
    }
    let get = |f: Fwd, p: PathKind, m: fn(&Cell) -> Option<u64>| cells.iter().find(|c| c.fwd == f && c.path == p).and_then(m);
    let mut ratios = Vec::new();
    for &p in &args.paths {
        for (metric, m) in [
            ("64 B pps", (|c: &Cell| c.pps_64) as fn(&Cell) -> Option<u64>),
            ("IMIX pps", |c: &Cell| c.pps_imix),
            ("no-drop pps", |c: &Cell| c.ndr_64),
        ] {
            ratios.push(Ratio {
                path: p,
                metric,
                switch_vs_kernel: ratio(get(Fwd::Switch, p, m), get(Fwd::Kernel, p, m)),
                switch_vs_ovs: ratio(get(Fwd::Switch, p, m), get(Fwd::Ovs, p, m)),
            });
        }
    }
    let pps = |f, p| get(f, p, |c| c.pps_64);
    Summary {
        switch_svc_pps: pps(Fwd::Switch, PathKind::PodSvc),
        kernel_nft_pps: pps(Fwd::Kernel, PathKind::PodSvc),
        switch_fwd_pps: pps(Fwd::Switch, PathKind::PodPod),
        ovs_afxdp_pps: pps(Fwd::Ovs, PathKind::PodPod),
        switch_vs_kernel_svc: ratio(pps(Fwd::Switch, PathKind::PodSvc), pps(Fwd::Kernel, PathKind::PodSvc)),
        switch_vs_ovs_fwd: ratio(pps(Fwd::Switch, PathKind::PodPod), pps(Fwd::Ovs, PathKind::PodPod)),
        ratios,
        cells,
        setup,
        env,
        samples,
        notes,
        stamp: Stamp::new(started_utc, elapsed),
    }
}

/// A figure, with "≥" when it is a lower bound (the generator was the limit).
fn lb(x: Option<u64>, lower: bool) -> String {
    match x {
        Some(v) if lower => format!("≥{}", thousands(v)),
        _ => ot(x),
    }
}

fn or(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

const HEAD: [&str; 11] = [
    "path",
    "forwarder",
    "64 B pps",
    "IMIX pps",
    "IMIX Gbit/s",
    "no-drop pps",
    "p50 µs",
    "p99 µs",
    "CPU µs/pkt (64 B)",
    "vs kernel",
    "vs OVS",
];

fn rows(s: &Summary) -> Vec<[String; 11]> {
    let mut out = Vec::new();
    for c in &s.cells {
        let (vk, vo) = if c.fwd == Fwd::Switch {
            let r = s.ratios.iter().find(|r| r.path == c.path && r.metric == "64 B pps");
            (or(r.and_then(|r| r.switch_vs_kernel)), or(r.and_then(|r| r.switch_vs_ovs)))
        } else {
            (String::new(), String::new())
        };
        out.push([
            c.path.title().to_string(),
            c.fwd.title().to_string(),
            lb(c.pps_64, c.pps_64_lower_bound),
            lb(c.pps_imix, c.pps_imix_lower_bound),
            of(c.gbps_imix, 2),
            lb(c.ndr_64, c.ndr_lower_bound),
            of(c.latency_p50_us, 1),
            of(c.latency_p99_us, 1),
            of(c.cpu_us_per_pkt_64, 2),
            vk,
            vo,
        ]);
    }
    out
}

fn headline(s: &Summary) -> Vec<String> {
    let lower = |f: Fwd, p: PathKind| s.cell(f, p).is_some_and(|c| c.pps_64_lower_bound);
    let line = |what: &str, r: Option<f64>, a: Option<u64>, b: Option<u64>, sw_lower: bool, other_lower: bool| {
        let verdict = verdict(r, |r| r >= 1.0);
        let mut l = format!("{what}: {} ({} vs {} pps) — done means ≥ 1: {verdict}", or(r), ot(a), ot(b));
        if other_lower {
            l.push_str(" (the other path was not saturated: its figure is a lower bound)");
        }
        if sw_lower {
            l.push_str(" (the switch was not saturated: its figure is a lower bound)");
        }
        l
    };
    // (what, ratio, switch pps, other pps, the other forwarder, the path compared on)
    [
        ("switch/kernel, pod → ClusterIP, 64 B, 10,000 Services", s.switch_vs_kernel_svc, s.switch_svc_pps, s.kernel_nft_pps, Fwd::Kernel, PathKind::PodSvc),
        ("switch/OVS AF_XDP, pod → pod, 64 B", s.switch_vs_ovs_fwd, s.switch_fwd_pps, s.ovs_afxdp_pps, Fwd::Ovs, PathKind::PodPod),
    ]
    .into_iter()
    .map(|(what, r, sw, other, other_fwd, path)| line(what, r, sw, other, lower(Fwd::Switch, path), lower(other_fwd, path)))
    .collect()
}

/// The readable report (stdout without --json).
pub fn table(s: &Summary) -> String {
    let mut o = String::new();
    let st = &s.setup;
    let _ = writeln!(
        o,
        "\ne2e: {} Services ({} endpoints), {} policies (switch only), {} pods; {} round(s), medians; pktgen on core {}, forwarder on core {}; {} UDP flows; load average {} -> {}\n",
        thousands(st.services as u64),
        thousands(st.endpoints as u64),
        thousands(st.policies as u64),
        thousands(st.pods as u64),
        st.rounds,
        st.gen_core,
        st.fwd_core,
        st.flows,
        s.env.host.loadavg_start,
        s.env.host.loadavg_end
    );
    o.push_str("(≥: the generator was the limit, the figure is a lower bound)\n\n");
    o.push_str(&padded(&HEAD, &rows(s), &[0, 1]));
    o.push('\n');
    for l in headline(s) {
        let _ = writeln!(o, "{l}");
    }
    let _ = writeln!(o, "kernel rules: {} chains loaded in {} s; switch start with all objects: {:?} s", st.nft_chains, st.nft_load_s, st.switch_start_s);
    o.push_str(&section("\nnotes:\n", "  ", &s.notes));
    let errs: Vec<&Sample> = s.samples.iter().filter(|x| !x.errors.is_empty()).collect();
    for x in errs {
        for e in &x.errors {
            let _ = writeln!(o, "ERROR round {} {} {}: {e}", x.round, x.fwd.name(), x.path.name());
        }
    }
    o
}

pub fn markdown(s: &Summary) -> String {
    let mut o = heading("e2e");
    let st = &s.setup;
    let _ = writeln!(
        o,
        "{}; load average {} at start, {} at end",
        run_line(&s.stamp, &s.env.host),
        s.env.host.loadavg_start,
        s.env.host.loadavg_end
    );
    let _ = writeln!(
        o,
        "- Loaded: {} Services with {} endpoints (switch: manifests; kernel: kube-proxy's nftables layout, {} chains, loaded in {} s), {} NetworkPolicies over {} pods (switch only)",
        thousands(st.services as u64),
        thousands(st.endpoints as u64),
        thousands(st.nft_chains as u64),
        st.nft_load_s,
        thousands(st.policies as u64),
        thousands(st.pods as u64)
    );
    let _ = writeln!(
        o,
        "- Generator: pktgen (AF_XDP) sending and receiving on core {}, {} UDP flows; forwarder on core {}; {} round(s), forwarders interleaved (order rotating), medians over rounds",
        st.gen_core,
        st.flows,
        st.fwd_core,
        st.rounds
    );
    o.push_str("- `≥`: the forwarder lost nothing at the generator's maximum (rate) or passed the first trial at 1.1x the rate offered in the rate run (no-drop): the generator was the limit, the figure a lower bound\n");
    let _ = writeln!(
        o,
        "- Rate runs {} s (64 B, IMIX 64×7/594×4/1518×1); no-drop: RFC 2544 search, {} s trials, resolution {}%; latency: one-way at {} pps for {} s\n- {}, {}\n",
        st.duration_s,
        st.ndr_trial_s,
        st.ndr_resolution * 100.0,
        thousands(st.latency_rate),
        st.latency_duration_s,
        s.env.ovs_version,
        s.env.nft_version
    );
    o.push_str(&markdown_table(&HEAD, &rows(s), &[0, 1]));
    o.push('\n');
    o.push_str(&section("", "- ", headline(s)));
    o.push_str("\n![rates](e2e-rates.svg)\n\n![CPU per packet](e2e-cpu.svg)\n\n## Ratios\n\n");
    let ratios: Vec<[String; 4]> =
        s.ratios.iter().map(|r| [r.path.title().to_string(), r.metric.to_string(), or(r.switch_vs_kernel), or(r.switch_vs_ovs)]).collect();
    o.push_str(&markdown_table(&["path", "metric", "switch/kernel", "switch/OVS"], &ratios, &[0, 1]));
    o.push_str("\n## Per round\n\n");
    let head = ["round", "forwarder", "path", "64 B pps", "offered", "lost", "IMIX pps", "no-drop pps (trials)", "p50 / p99 µs", "CPU µs/pkt 64 B / IMIX", "core busy 0 / 1"];
    let per_round = |x: &Sample| {
        let r = x.rate_64.as_ref();
        [
            x.round.to_string(),
            x.fwd.name().to_string(),
            x.path.name().to_string(),
            ot(r.map(|r| r.pps)),
            ot(r.map(|r| r.offered_pps)),
            ot(r.map(|r| r.lost)),
            ot(x.rate_imix.as_ref().map(|r| r.pps)),
            x.ndr_64.as_ref().map_or("-".into(), |n| format!("{} ({})", ot(n.ndr_pps), n.trials)),
            x.latency_64.as_ref().map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50_ns as f64 / 1e3, l.p99_ns as f64 / 1e3)),
            format!("{} / {}", of(r.and_then(|r| r.cpu_ns_per_pkt).map(|n| n / 1e3), 2), of(x.rate_imix.as_ref().and_then(|r| r.cpu_ns_per_pkt).map(|n| n / 1e3), 2)),
            r.map_or("-".into(), |r| r.core_busy.iter().map(|b| format!("{:.0}%", b * 100.0)).collect::<Vec<_>>().join(" / ")),
        ]
    };
    o.push_str(&markdown_table(&head, &s.samples.iter().map(per_round).collect::<Vec<_>>(), &[1, 2, 8, 9, 10]));
    let errs = s.samples.iter().flat_map(|x| x.errors.iter().map(move |e| format!("round {} {} {}: `{}`", x.round, x.fwd.name(), x.path.name(), e.replace('\n', " "))));
    o.push_str(&section("\n## Errors\n\n", "- ", errs));
    o.push_str(&section("\n## Notes\n\n", "- ", &s.notes));
    o
}

const COLORS: [(Fwd, &str); 3] = [(Fwd::Switch, "#1f77b4"), (Fwd::Kernel, "#ff7f0e"), (Fwd::Ovs, "#2ca02c")];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One group of bars: its label (lines split by '\n') and a value per forwarder.
type Group = (String, Vec<(Fwd, Option<f64>)>);

/// A grouped bar chart: one group per (path, metric), one bar per forwarder.
fn bars(title: &str, unit: &str, groups: &[Group], fmt: impl Fn(f64) -> String) -> String {
    let (w, h, left, top, bottom) = (860.0, 360.0, 70.0, 40.0, 70.0);
    let plot_h = h - top - bottom;
    let max = groups.iter().flat_map(|(_, v)| v.iter().filter_map(|(_, x)| *x)).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let gw = (w - left - 20.0) / groups.len().max(1) as f64;
    let mut o = String::new();
    let _ = writeln!(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">");
    let _ = writeln!(o, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(o, "<text x=\"{}\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">{}</text>", w / 2.0, esc(title));
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        let y = top + plot_h - plot_h * i as f64 / 4.0;
        let _ = writeln!(o, "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>", w - 20.0);
        let _ = writeln!(o, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", left - 5.0, y + 4.0, esc(&fmt(v)));
    }
    let _ = writeln!(o, "<text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>", top + plot_h / 2.0, top + plot_h / 2.0, esc(unit));
    for (gi, (label, vals)) in groups.iter().enumerate() {
        let x0 = left + gi as f64 * gw;
        let bw = (gw * 0.8) / vals.len().max(1) as f64;
        for (bi, (f, v)) in vals.iter().enumerate() {
            let color = COLORS.iter().find(|(c, _)| c == f).map_or("#888", |(_, c)| *c);
            let x = x0 + gw * 0.1 + bi as f64 * bw;
            if let Some(v) = v {
                let bh = plot_h * v / max;
                let y = top + plot_h - bh;
                let _ = writeln!(o, "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{} {}</title></rect>", bw * 0.92, f.title(), esc(&fmt(*v)));
                let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"9\">{}</text>", x + bw * 0.46, y - 3.0, esc(&fmt(*v)));
            }
        }
        for (li, part) in label.split('\n').enumerate() {
            let _ = writeln!(o, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>", x0 + gw / 2.0, top + plot_h + 16.0 + 13.0 * li as f64, esc(part));
        }
    }
    for (i, (f, c)) in COLORS.iter().enumerate() {
        let x = left + 10.0 + i as f64 * 190.0;
        let y = h - 14.0;
        let _ = writeln!(o, "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{c}\"/><text x=\"{}\" y=\"{}\">{}</text>", y - 10.0, x + 16.0, y, esc(f.title()));
    }
    o.push_str("</svg>\n");
    o
}

fn kpps(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The paths measured, each once, in their order.
fn paths_of(s: &Summary) -> Vec<PathKind> {
    let mut p: Vec<PathKind> = s.cells.iter().map(|c| c.path).collect();
    p.sort();
    p.dedup();
    p
}

pub fn svg_rates(s: &Summary) -> String {
    let mut groups = Vec::new();
    let paths = paths_of(s);
    for p in paths {
        for (metric, m) in [("64 B", (|c: &Cell| c.pps_64) as fn(&Cell) -> Option<u64>), ("IMIX", |c: &Cell| c.pps_imix), ("no-drop 64 B", |c: &Cell| c.ndr_64)] {
            let vals = COLORS.iter().map(|(f, _)| (*f, s.cell(*f, p).and_then(m).map(|x| x as f64))).filter(|(f, _)| s.cell(*f, p).is_some()).collect();
            groups.push((format!("{}\n{metric}", p.title()), vals));
        }
    }
    bars("Frames per second received at pod b (medians over rounds)", "frames/s", &groups, kpps)
}

pub fn svg_cpu(s: &Summary) -> String {
    let mut groups = Vec::new();
    for p in paths_of(s) {
        for (metric, m) in [("64 B", (|c: &Cell| c.cpu_us_per_pkt_64) as fn(&Cell) -> Option<f64>), ("IMIX", |c: &Cell| c.cpu_us_per_pkt_imix)] {
            let vals = COLORS.iter().map(|(f, _)| (*f, s.cell(*f, p).and_then(m))).filter(|(f, _)| s.cell(*f, p).is_some()).collect();
            groups.push((format!("{}\n{metric}", p.title()), vals));
        }
    }
    bars("Forwarding core CPU time per packet at the maximum rate (lower is better)", "µs per packet", &groups, |v| format!("{v:.2}"))
}

/// The result files: e2e.json, e2e.md and the two SVGs.
pub fn files(s: &Summary) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("e2e.json", crate::harness::report::json(s)?),
        ("e2e.md", markdown(s)),
        ("e2e-rates.svg", svg_rates(s)),
        ("e2e-cpu.svg", svg_cpu(s)),
    ])
}

#[cfg(test)]
mod tests {
    use crate::harness::pktgen::NdrResult;
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: E2eArgs,
    }

    fn rate(pps: u64, sent: u64, lost: u64) -> RateResult {
        RateResult { pps, offered_pps: sent / 2, sent, received: sent - lost, lost, mean_frame_bytes: 64.0, cpu_ns_per_pkt: Some(2000.0), cpu_util: Some(0.5), core_busy: vec![1.0, 1.0] }
    }

    fn summary() -> Summary {
        let args = Cli::parse_from(["e2e"]).a;
        let mut samples = Vec::new();
        for round in 1..=3 {
            for (fwd, paths) in [
                (Fwd::Switch, vec![PathKind::PodPod, PathKind::PodSvc, PathKind::Nodeport]),
                (Fwd::Kernel, vec![PathKind::PodPod, PathKind::PodSvc, PathKind::Nodeport]),
                (Fwd::Ovs, vec![PathKind::PodPod]),
            ] {
                for path in paths {
                    let base = match fwd {
                        Fwd::Switch => 300_000,
                        Fwd::Kernel => 200_000,
                        Fwd::Ovs => 250_000,
                    } + round as u64 * 1000;
                    // The kernel loses nothing: its figures are lower bounds.
                    let lost = if fwd == Fwd::Kernel { 0 } else { 1000 };
                    samples.push(Sample {
                        round,
                        fwd,
                        path,
                        rate_64: Some(rate(base, 2 * base, lost)),
                        rate_imix: Some(rate(base / 2, base, lost)),
                        ndr_64: Some(NdrResult { ndr_pps: Some(base - 10_000), generator_limited: false, trials: 7, p50_ns_at_ndr: None, p99_ns_at_ndr: None }),
                        latency_64: None,
                        errors: Vec::new(),
                    });
                }
            }
        }
        let setup = Setup {
            services: 10_000,
            endpoints: 99_991,
            policies: 1000,
            pods: 10_002,
            nft_chains: 110_008,
            nft_load_s: 18.0,
            switch_start_s: vec![2.0],
            flows: 256,
            gen_core: 0,
            fwd_core: 1,
            rounds: 3,
            duration_s: 2.5,
            ndr_trial_s: 0.5,
            ndr_resolution: 0.02,
            latency_rate: 50_000,
            latency_duration_s: 1.5,
        };
        let env = Env {
            host: crate::harness::host::Host { kernel: "k".into(), cpu: "c".into(), online_cpus: 2, ..Default::default() },
            ovs_version: String::new(),
            nft_version: String::new(),
        };
        summarize(&args, samples, setup, env, Vec::new(), String::new(), 1.0)
    }

    #[test]
    fn headline_keys_come_first_with_medians() {
        let s = summary();
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.starts_with("{\"switch_svc_pps\":302000,\"kernel_nft_pps\":202000,\"switch_fwd_pps\":302000,\"ovs_afxdp_pps\":252000,"), "{}", &j[..120]);
        assert_eq!(s.switch_vs_kernel_svc, Some(1.495));
        let k = s.cell(Fwd::Kernel, PathKind::PodSvc).unwrap();
        assert!(k.pps_64_lower_bound && !s.cell(Fwd::Switch, PathKind::PodSvc).unwrap().pps_64_lower_bound);
        assert!(table(&s).contains("≥202,000"));
    }

    #[test]
    fn rate_chart_has_one_group_per_path_and_metric() {
        let svg = svg_rates(&summary());
        // 3 paths x 3 metrics; bars: (3 + 3 + 3) x 2 forwarders + 3 x 1 (OVS on pod -> pod) = 21.
        assert_eq!(svg.matches("<rect x=").count() - 3, 21, "bars (minus 3 legend squares)");
        assert_eq!(svg.matches(">pod → pod</text>").count(), 3);
        assert!(svg_cpu(&summary()).contains("µs per packet"));
    }
}
