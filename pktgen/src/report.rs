//! What pktgen prints: the live progress line, the summary, `--json` and the `--plot` SVG.
//!
//! Contract:
//! - Progress (once a second, stderr): elapsed time, send and receive rates over the last
//!   second, loss so far and the p99 latency of the last second.
//! - The summary goes to stdout; with `--json` stdout is exactly one JSON object (the
//!   [`Report`]), on the last line.
//! - The SVG holds two charts: the latency distribution (latency against percentile on the
//!   usual log scale of 1/(1-p), from the hdrhistogram) and the send/receive rates over time.
//!   It is self-contained (no scripts, no external fonts or styles).
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::port::PortDesc;
use crate::rfc2544::SearchResult;
use crate::rx::KernelDrops;
use crate::stats::Latency;

/// One second of the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Tick {
    pub t_s: f64,
    pub tx_pps: u64,
    pub rx_pps: u64,
    /// Lost so far (sent - received, or inferred from sequence gaps when only receiving).
    pub lost: u64,
    pub p99_ns: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrafficDesc {
    pub proto: &'static str,
    pub flows: usize,
    pub src_ip: String,
    pub dst_ip: String,
    pub src_port: String,
    pub dst_port: String,
    /// Frame sizes with FCS as asked (`64`, `imix`, ...).
    pub sizes: String,
    pub mean_size: f64,
    pub rate: String,
    pub src_mac: String,
    pub dst_mac: String,
    /// Frames pktgen built (reused for the whole run).
    pub frames: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TxSummary {
    pub sent: u64,
    pub bytes: u64,
    pub duration_s: f64,
    pub pps: u64,
    /// Bits per second on the wire (frame + FCS + preamble + inter-frame gap).
    pub wire_bps: u64,
    pub kicks: u64,
    pub frames_per_kick: Option<f64>,
    pub stalls: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RxSummary {
    /// Frames read from the interface.
    pub frames: u64,
    /// Frames with pktgen's stamp of this run.
    pub matched: u64,
    /// Distinct (flow, sequence) received.
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    /// "sent" (the sender's counts of stamped frames), "requests" (every frame sent, against
    /// replies matched in order), "inferred" (sequence gaps; cannot see a lost tail), or
    /// "none" (the frames carry no stamp and nothing answered them).
    pub loss_basis: &'static str,
    pub duplicates: u64,
    pub reordered: u64,
    /// Stamps of another run (late frames of an earlier trial).
    pub stale: u64,
    /// Frames without a stamp.
    pub other: u64,
    /// Stamps with a time in the future (clocks of two machines).
    pub bad_time: u64,
    pub unknown_flow: u64,
    /// Matched frames per second between the first and the last matched frame.
    pub pps: u64,
    /// What the kernel dropped before pktgen read it (AF_XDP sockets only).
    pub kernel_drops: Option<KernelDrops>,
    /// Replies without a stamp matched to requests first-in-first-out per flow (exact while
    /// nothing is lost).
    pub replies_in_order: u64,
    /// Of those, replies whose request's send time was unknown (no latency sample).
    pub replies_untimed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    /// "one-way" or "round-trip".
    pub kind: &'static str,
    #[serde(flatten)]
    pub l: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub flow: usize,
    pub src: String,
    pub dst: String,
    pub sent: Option<u64>,
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub tx_port: Option<PortDesc>,
    pub rx_port: Option<PortDesc>,
    pub traffic: Option<TrafficDesc>,
    pub tx: Option<TxSummary>,
    pub rx: Option<RxSummary>,
    pub latency: Option<LatencyReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<FlowReport>,
    pub timeline: Vec<Tick>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rfc2544: Option<SearchResult>,
    pub interrupted: bool,
    pub notes: Vec<String>,
}

/// 1234567 -> "1,234,567".
pub fn thousands(x: u64) -> String {
    let s = x.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1234 -> "1.23 µs".
pub fn ns(x: u64) -> String {
    let v = x as f64;
    if v < 1e3 {
        format!("{x} ns")
    } else if v < 1e6 {
        format!("{:.2} µs", v / 1e3)
    } else if v < 1e9 {
        format!("{:.2} ms", v / 1e6)
    } else {
        format!("{:.3} s", v / 1e9)
    }
}

pub fn progress_line(t: &Tick, receiving: bool, sending: bool) -> String {
    let mut s = format!("[{:>5.0}s]", t.t_s);
    if sending {
        let _ = write!(s, " tx {:>11} pps", thousands(t.tx_pps));
    }
    if receiving {
        let _ = write!(s, "  rx {:>11} pps  lost {}", thousands(t.rx_pps), thousands(t.lost));
        let _ = write!(s, "  p99 {}", t.p99_ns.map_or_else(|| "-".into(), ns));
    }
    s
}

impl Report {
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = write!(o, "pktgen {}", self.mode);
        if let Some(t) = &self.traffic {
            let _ = write!(
                o,
                ": {} {}:{} -> {}:{}, {} flow(s), sizes {} (mean {:.0} B), rate {}",
                t.proto, t.src_ip, t.src_port, t.dst_ip, t.dst_port, t.flows, t.sizes, t.mean_size, t.rate
            );
        }
        if self.interrupted {
            o.push_str(" (interrupted)");
        }
        o.push('\n');
        if let Some(p) = &self.tx_port {
            let _ = writeln!(o, "  tx port   {}", p.summary());
        }
        if let Some(p) = &self.rx_port {
            let _ = writeln!(o, "  rx port   {}", p.summary());
        }
        if let Some(tx) = &self.tx {
            let _ = writeln!(
                o,
                "  sent      {} frames in {:.2} s = {} pps ({:.3} Gbit/s on the wire){}",
                thousands(tx.sent),
                tx.duration_s,
                thousands(tx.pps),
                tx.wire_bps as f64 / 1e9,
                tx.frames_per_kick.map(|k| format!(", {k:.1} frames per sendto()")).unwrap_or_default()
            );
        }
        if let Some(rx) = &self.rx {
            let _ = writeln!(
                o,
                "  received  {} frames ({} pps) of pktgen's{}, {} other, {} stale",
                thousands(rx.received),
                thousands(rx.pps),
                if rx.replies_in_order > 0 {
                    format!(" ({} with a stamp, {} replies matched in order)", thousands(rx.matched - rx.replies_in_order), thousands(rx.replies_in_order))
                } else {
                    String::new()
                },
                thousands(rx.other),
                thousands(rx.stale)
            );
            let _ = writeln!(
                o,
                "  lost      {} ({:.4}%, {}), reordered {}, duplicates {}{}",
                thousands(rx.lost),
                rx.loss_ratio * 100.0,
                match rx.loss_basis {
                    "sent" => "counted against what was sent",
                    "requests" => "counted against the requests sent",
                    "inferred" => "inferred from sequence gaps",
                    _ => "not measurable: the frames carry no stamp",
                },
                thousands(rx.reordered),
                thousands(rx.duplicates),
                if rx.bad_time > 0 { format!(", {} with a time in the future", rx.bad_time) } else { String::new() }
            );
            if rx.replies_in_order > 0 {
                let _ = writeln!(
                    o,
                    "  replies   {} carried no stamp and were matched to requests in order per flow (exact while nothing is lost){}",
                    thousands(rx.replies_in_order),
                    if rx.replies_untimed > 0 { format!(", {} untimed", thousands(rx.replies_untimed)) } else { String::new() }
                );
            }
            if let Some(d) = rx.kernel_drops.filter(|d| d.rx_ring_full + d.fill_ring_empty + d.other > 0) {
                let _ = writeln!(
                    o,
                    "  receiver  the kernel dropped frames before pktgen read them: RX ring full {}, fill ring empty {}, other {}",
                    thousands(d.rx_ring_full),
                    thousands(d.fill_ring_empty),
                    thousands(d.other)
                );
            }
        }
        if let Some(l) = &self.latency {
            if l.l.samples > 0 {
                let _ = writeln!(
                    o,
                    "  latency   {} ({} samples): min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    l.kind,
                    thousands(l.l.samples),
                    ns(l.l.min_ns),
                    ns(l.l.p50_ns),
                    ns(l.l.p90_ns),
                    ns(l.l.p99_ns),
                    ns(l.l.p999_ns),
                    ns(l.l.max_ns)
                );
            }
        }
        if let Some(r) = &self.rfc2544 {
            o.push_str("  RFC 2544 throughput search:\n");
            for t in &r.trials {
                let _ = writeln!(
                    o,
                    "    trial {:>2}: offered {:>12}  sent {:>11} pps  lost {:>9} ({:.4}%)  p99 {:>10}  {}",
                    t.n,
                    t.outcome.offered_pps.map_or_else(|| "max".into(), |p| format!("{} pps", thousands(p))),
                    thousands(t.outcome.sent_pps),
                    thousands(t.outcome.lost),
                    t.outcome.loss_ratio() * 100.0,
                    if t.outcome.latency.samples > 0 { ns(t.outcome.latency.p99_ns) } else { "-".into() },
                    if t.passed {
                        "pass".to_string()
                    } else if t.outcome.generator_short() {
                        "not offered (the generator fell short)".to_string()
                    } else {
                        "FAIL".to_string()
                    }
                );
            }
            match (r.throughput_pps, &r.at_throughput) {
                (Some(p), Some(at)) => {
                    let _ = writeln!(
                        o,
                        "  throughput {} pps without loss{}; latency there: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                        thousands(p),
                        if r.generator_limited { " (the generator's own limit: the device kept up)" } else { "" },
                        ns(at.latency.p50_ns),
                        ns(at.latency.p90_ns),
                        ns(at.latency.p99_ns),
                        ns(at.latency.p999_ns),
                        ns(at.latency.max_ns)
                    );
                }
                _ => o.push_str("  throughput: no trial passed\n"),
            }
        }
        if !self.flows.is_empty() {
            o.push_str("  per flow:\n");
            for f in &self.flows {
                let _ = writeln!(
                    o,
                    "    {:>5} {} -> {}: sent {} received {} lost {} reordered {} duplicates {}",
                    f.flow,
                    f.src,
                    f.dst,
                    f.sent.map_or_else(|| "-".into(), thousands),
                    thousands(f.received),
                    thousands(f.lost),
                    thousands(f.reordered),
                    thousands(f.duplicates)
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note: {n}");
        }
        o
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A "nice" axis maximum and step for values up to `max`.
fn axis(max: f64) -> (f64, f64) {
    let max = if max <= 0.0 { 1.0 } else { max };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

/// The `--plot` chart.
pub fn svg(title: &str, hist: Option<&Histogram<u64>>, latency_kind: &str, timeline: &[Tick]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 300.0;
    const L: f64 = 80.0;
    const R: f64 = 30.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    let pw = W - L - R;
    let ph = H - T - B;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" viewBox="0 0 {W} {}" font-family="sans-serif" font-size="12">"#,
        2.0 * H + 20.0,
        2.0 * H + 20.0
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(o, r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#, L, esc(title));

    // 1. Latency distribution.
    let oy = 0.0;
    let _ = writeln!(o, r#"<text x="{}" y="{}" font-weight="bold">{} latency by percentile</text>"#, L, oy + T - 8.0, esc(latency_kind));
    let pts: Vec<(f64, f64)> = match hist {
        Some(h) if !h.is_empty() => h
            .iter_quantiles(10)
            .map(|v| (v.quantile_iterated_to(), h.highest_equivalent(v.value_iterated_to()) as f64))
            .filter(|(q, _)| *q < 1.0)
            .chain(std::iter::once((0.999_999, h.max() as f64)))
            .collect(),
        _ => Vec::new(),
    };
    // x = log10(1 / (1 - q)), from 0 (p0) to 6 (p99.9999).
    let xmax = 6.0;
    let xq = |q: f64| L + pw * ((1.0 / (1.0 - q.min(0.999_999))).log10() / xmax);
    if pts.is_empty() {
        let _ = writeln!(o, r#"<text x="{}" y="{}" fill="gray">no latency samples</text>"#, L + 20.0, oy + T + ph / 2.0);
    } else {
        let ymax_ns = pts.iter().map(|p| p.1).fold(0.0, f64::max);
        let (unit, div) = if ymax_ns >= 1e6 { ("ms", 1e6) } else { ("µs", 1e3) };
        let (top, step) = axis(ymax_ns / div);
        let y = |v_ns: f64| oy + T + ph - ph * (v_ns / div / top);
        let mut v = 0.0;
        while v <= top + 1e-9 {
            let yy = y(v * div);
            let _ = writeln!(o, r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, L + pw);
            let _ = writeln!(o, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, L - 6.0, yy + 4.0, trim(v));
            v += step;
        }
        let _ = writeln!(o, r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">latency ({unit})</text>"#, oy + T + ph / 2.0, oy + T + ph / 2.0);
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"].iter().enumerate() {
            let xx = L + pw * (i as f64 / xmax);
            let _ = writeln!(o, r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{}" y2="{}" stroke="#ddd"/>"##, oy + T, oy + T + ph);
            let _ = writeln!(o, r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"#, oy + T + ph + 16.0);
        }
        let _ = writeln!(o, r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#, L + pw / 2.0, oy + T + ph + 34.0);
        let path: Vec<String> = pts.iter().map(|(q, v)| format!("{:.1},{:.1}", xq(*q), y(*v))).collect();
        let _ = writeln!(o, r##"<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{}"/>"##, path.join(" "));
    }
    let _ = writeln!(o, r##"<rect x="{L}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##, oy + T);

    // 2. Rates over time.
    let oy = H + 20.0;
    let _ = writeln!(o, r#"<text x="{}" y="{}" font-weight="bold">rate over time (frames/s)</text>"#, L, oy + T - 8.0);
    let tmax = timeline.iter().map(|t| t.t_s).fold(1.0, f64::max);
    let rmax = timeline.iter().map(|t| t.tx_pps.max(t.rx_pps) as f64).fold(0.0, f64::max);
    let (top, step) = axis(rmax);
    let x = |t: f64| L + pw * (t / tmax);
    let y = |v: f64| oy + T + ph - ph * (v / top);
    let mut v = 0.0;
    while v <= top + 1e-9 {
        let yy = y(v);
        let _ = writeln!(o, r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/>"##, L + pw);
        let _ = writeln!(o, r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#, L - 6.0, yy + 4.0, thousands(v as u64));
        v += step;
    }
    let (_, tstep) = axis(tmax);
    let mut t = 0.0;
    while t <= tmax + 1e-9 {
        let xx = x(t);
        let _ = writeln!(o, r#"<text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"#, oy + T + ph + 16.0, trim(t));
        t += tstep;
    }
    let _ = writeln!(o, r#"<text x="{}" y="{}" text-anchor="middle">seconds</text>"#, L + pw / 2.0, oy + T + ph + 34.0);
    for (name, color, get) in [
        ("sent", "#2471a3", (|t: &Tick| t.tx_pps) as fn(&Tick) -> u64),
        ("received", "#229954", (|t: &Tick| t.rx_pps) as fn(&Tick) -> u64),
    ] {
        if timeline.iter().all(|t| get(t) == 0) {
            continue;
        }
        let pts: Vec<String> = timeline.iter().map(|t| format!("{:.1},{:.1}", x(t.t_s), y(get(t) as f64))).collect();
        let _ = writeln!(o, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        let ly = if name == "sent" { oy + T + 14.0 } else { oy + T + 30.0 };
        let _ = writeln!(o, r#"<text x="{}" y="{ly}" fill="{color}">{name}</text>"#, L + pw - 70.0);
    }
    let _ = writeln!(o, r##"<rect x="{L}" y="{}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##, oy + T);
    o.push_str("</svg>\n");
    o
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, record_latency};

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(ns(999), "999 ns");
        assert_eq!(ns(12_340), "12.34 µs");
        assert_eq!(ns(2_500_000), "2.50 ms");
        assert_eq!(axis(0.0), (1.0, 0.2));
        assert_eq!(axis(1_234_567.0), (1_250_000.0, 250_000.0));
    }

    #[test]
    fn svg_is_well_formed() {
        let mut h = new_histogram();
        for v in 1..10_000u64 {
            record_latency(&mut h, 10_000 + v * 3);
        }
        let tl: Vec<Tick> = (1..=5).map(|s| Tick { t_s: s as f64, tx_pps: 1_000_000, rx_pps: 999_000, lost: 0, p99_ns: Some(40_000) }).collect();
        let s = svg("pktgen run <test>", Some(&h), "one-way", &tl);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 3);
        assert!(s.contains("&lt;test&gt;"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        let empty = svg("x", None, "one-way", &[]);
        assert!(empty.contains("no latency samples"));
        assert!(!empty.contains("NaN"));
    }

    #[test]
    fn json_has_the_summary_fields() {
        let r = Report {
            mode: "run",
            tx_port: None,
            rx_port: None,
            traffic: None,
            tx: Some(TxSummary { sent: 10, pps: 5, ..Default::default() }),
            rx: Some(RxSummary { received: 10, loss_basis: "sent", ..Default::default() }),
            latency: Some(LatencyReport { kind: "one-way", l: Latency { samples: 10, p99_ns: 7, ..Default::default() } }),
            flows: vec![],
            timeline: vec![],
            rfc2544: None,
            interrupted: false,
            notes: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(v["tx"]["sent"], 10);
        assert_eq!(v["latency"]["p99_ns"], 7);
        assert_eq!(v["latency"]["kind"], "one-way");
        assert!(v.get("flows").is_none());
        assert!(r.text().contains("lost      0"));
    }
}
