//! The summary of `bench portkinds`: medians over rounds per kind, the frame sizes each
//! mechanism carried, the progress line of a turn, the Markdown report and the result files.
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::forwarder::DirStats;
use super::{Env, Kind, Params, Sample};
use crate::harness::report::section;
use crate::stats::{median_of as med, opt_fixed as num, round_to};

/// Frame sizes one direction carried over all rounds (without the vnet header).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Frames {
    pub frames: u64,
    pub max_bytes: u64,
    pub avg_bytes: Option<f64>,
    /// Frames above 1,514 bytes: super-frames kept whole.
    pub over_1514: u64,
    pub gso_frames: u64,
    pub partial_csum: u64,
    pub tx_failed: u64,
}

impl Frames {
    fn add(&mut self, d: &DirStats) {
        self.frames += d.frames;
        self.max_bytes = self.max_bytes.max(d.max_frame);
        self.over_1514 += d.over_1514;
        self.gso_frames += d.gso_frames;
        self.partial_csum += d.partial_csum;
        self.tx_failed += d.tx_failed;
        let bytes = self.avg_bytes.unwrap_or(0.0) * (self.frames - d.frames) as f64 + d.bytes as f64;
        self.avg_bytes = (self.frames > 0).then(|| round_to(bytes / self.frames as f64, 0));
    }

    fn text(&self) -> String {
        if self.frames == 0 {
            return "-".into();
        }
        format!("max {} / avg {:.0} B, {:.0}% > 1514 B", self.max_bytes, self.avg_bytes.unwrap_or(0.0), 100.0 * self.over_1514 as f64 / self.frames as f64)
    }
}

/// One kind: medians over its rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: Kind,
    pub gbps: Option<f64>,
    pub gbps_rounds: Vec<f64>,
    /// Median Gbit/s over the kernel bridge's.
    pub vs_kernel_bridge: Option<f64>,
    pub retransmits: Option<f64>,
    pub fwd_cpu_s_per_gb: Option<f64>,
    pub busy_cpu_s_per_gb: Option<f64>,
    /// Pod a -> pod b (data) and back (ACKs), as the forwarder saw them.
    pub a_to_b: Frames,
    pub b_to_a: Frames,
    /// Average bytes per skb pod b's eth0 received (all rounds).
    pub pod_b_avg_rx_skb_bytes: Option<f64>,
    /// skbs pod b received per frame the forwarder sent it (1.0: one skb per super-frame).
    pub pod_b_skbs_per_frame: Option<f64>,
    pub ring_drops: Option<u64>,
    /// Input-backlog drops (all cores), median over rounds.
    pub backlog_drops: Option<f64>,
    pub pod_offloads: String,
}

/// Everything a run reports; the first fields are the JSON keys.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub packet_vnet_gbps: Option<f64>,
    pub tap_vnet_gbps: Option<f64>,
    pub kernel_bridge_gbps: Option<f64>,
    pub packet_vnet_cpu_s_per_gb: Option<f64>,
    pub tap_vnet_cpu_s_per_gb: Option<f64>,
    pub packet_vnet_csum_gbps: Option<f64>,
    pub tap_vnet_csum_gbps: Option<f64>,
    pub packet_vnet_csum_cpu_s_per_gb: Option<f64>,
    pub tap_vnet_csum_cpu_s_per_gb: Option<f64>,
    pub packet_vnet_retransmits: Option<f64>,
    pub tap_vnet_retransmits: Option<f64>,
    pub kernel_bridge_retransmits: Option<f64>,
    /// All cores' busy seconds per GB (the whole machine; the kernel's forwarding is in there).
    pub packet_vnet_busy_cpu_s_per_gb: Option<f64>,
    pub tap_vnet_busy_cpu_s_per_gb: Option<f64>,
    pub kernel_bridge_busy_cpu_s_per_gb: Option<f64>,
    /// Largest frame the forwarder carried pod a -> pod b (above 1,514: GSO kept).
    pub packet_vnet_stack_drop_gbps: Option<f64>,
    pub packet_vnet_stack_drop_busy_cpu_s_per_gb: Option<f64>,
    pub packet_vnet_max_frame: Option<u64>,
    pub tap_vnet_max_frame: Option<u64>,
    pub rounds: u32,
    pub rows: Vec<Row>,
    pub complete: bool,
    pub started_utc: String,
    pub elapsed_s: f64,
    pub params: Params,
    pub env: Env,
    pub notes: Vec<String>,
    pub samples: Vec<Sample>,
}

pub fn summarize(samples: Vec<Sample>, params: Params, env: Env, notes: Vec<String>, started_utc: String, elapsed: f64) -> Summary {
    let mut rows: Vec<Row> = Vec::new();
    let mut complete = true;
    for &kind in &params.kinds {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.kind == kind).collect();
        complete &= mine.len() == params.rounds as usize;
        let (mut ab, mut ba) = (Frames::default(), Frames::default());
        for s in &mine {
            if let Some(d) = &s.a_to_b {
                ab.add(d);
            }
            if let Some(d) = &s.b_to_a {
                ba.add(d);
            }
        }
        let rx_pk: u64 = mine.iter().filter_map(|s| s.pod_b_rx_packets).sum();
        let rx_b: u64 = mine.iter().filter_map(|s| s.pod_b_rx_bytes).sum();
        rows.push(Row {
            kind,
            gbps: med(&mine, |s| Some(s.tcp.gbps)),
            gbps_rounds: mine.iter().map(|s| s.tcp.gbps).collect(),
            vs_kernel_bridge: None,
            retransmits: med(&mine, |s| Some(s.tcp.retransmits as f64)),
            fwd_cpu_s_per_gb: med(&mine, |s| s.fwd_cpu_s_per_gb),
            busy_cpu_s_per_gb: med(&mine, |s| s.busy_cpu_s_per_gb),
            pod_b_avg_rx_skb_bytes: (rx_pk > 0).then(|| round_to(rx_b as f64 / rx_pk as f64, 0)),
            pod_b_skbs_per_frame: (ab.frames > 0 && rx_pk > 0).then(|| round_to(rx_pk as f64 / ab.frames as f64, 3)),
            a_to_b: ab,
            b_to_a: ba,
            ring_drops: mine.iter().filter_map(|s| s.ring_drops).reduce(u64::max),
            backlog_drops: med(&mine, |s| s.backlog_drops.map(|d| d as f64)),
            pod_offloads: mine.first().map(|s| s.pod_offloads.clone()).unwrap_or_default(),
        });
    }
    let bridge = rows.iter().find(|r| r.kind == Kind::KernelBridge).and_then(|r| r.gbps);
    for r in &mut rows {
        r.vs_kernel_bridge = r.gbps.zip(bridge).filter(|(_, b)| *b > 0.0).map(|(a, b)| round_to(a / b, 2));
    }
    let row = |k: Kind| rows.iter().find(|r| r.kind == k);
    let get = |k: Kind, f: fn(&Row) -> Option<f64>| row(k).and_then(f);
    let max_frame = |k: Kind| row(k).filter(|r| r.a_to_b.frames > 0).map(|r| r.a_to_b.max_bytes);
    Summary {
        packet_vnet_gbps: get(Kind::PacketVnet, |r| r.gbps),
        tap_vnet_gbps: get(Kind::TapVnet, |r| r.gbps),
        kernel_bridge_gbps: get(Kind::KernelBridge, |r| r.gbps),
        packet_vnet_cpu_s_per_gb: get(Kind::PacketVnet, |r| r.fwd_cpu_s_per_gb),
        tap_vnet_cpu_s_per_gb: get(Kind::TapVnet, |r| r.fwd_cpu_s_per_gb),
        packet_vnet_csum_gbps: get(Kind::PacketVnetCsum, |r| r.gbps),
        tap_vnet_csum_gbps: get(Kind::TapVnetCsum, |r| r.gbps),
        packet_vnet_csum_cpu_s_per_gb: get(Kind::PacketVnetCsum, |r| r.fwd_cpu_s_per_gb),
        tap_vnet_csum_cpu_s_per_gb: get(Kind::TapVnetCsum, |r| r.fwd_cpu_s_per_gb),
        packet_vnet_retransmits: get(Kind::PacketVnet, |r| r.retransmits),
        tap_vnet_retransmits: get(Kind::TapVnet, |r| r.retransmits),
        kernel_bridge_retransmits: get(Kind::KernelBridge, |r| r.retransmits),
        packet_vnet_busy_cpu_s_per_gb: get(Kind::PacketVnet, |r| r.busy_cpu_s_per_gb),
        tap_vnet_busy_cpu_s_per_gb: get(Kind::TapVnet, |r| r.busy_cpu_s_per_gb),
        kernel_bridge_busy_cpu_s_per_gb: get(Kind::KernelBridge, |r| r.busy_cpu_s_per_gb),
        packet_vnet_stack_drop_gbps: get(Kind::PacketVnetStackDrop, |r| r.gbps),
        packet_vnet_stack_drop_busy_cpu_s_per_gb: get(Kind::PacketVnetStackDrop, |r| r.busy_cpu_s_per_gb),
        packet_vnet_max_frame: max_frame(Kind::PacketVnet),
        tap_vnet_max_frame: max_frame(Kind::TapVnet),
        rounds: params.rounds,
        complete,
        started_utc,
        elapsed_s: round_to(elapsed, 1),
        rows,
        params,
        env,
        notes,
        samples,
    }
}

/// What a turn's progress line says after its run.
pub fn turn_line(s: &Sample) -> String {
    let mut l = format!("{:.2} Gbit/s, {} retransmissions", s.tcp.gbps, s.tcp.retransmits);
    if let Some(c) = s.fwd_cpu_s_per_gb {
        let _ = write!(l, ", forwarder {c:.3} s CPU/GB");
    }
    if let Some(c) = s.busy_cpu_s_per_gb {
        let _ = write!(l, ", machine {c:.3} s busy/GB");
    }
    for (dir, d) in [("a->b", &s.a_to_b), ("b->a", &s.b_to_a)] {
        if let Some(d) = d {
            let mut f = Frames::default();
            f.add(d);
            let _ = write!(l, "; {dir} {} frames, {}", d.frames, f.text());
            if d.tx_failed > 0 {
                let _ = write!(l, ", {} refused", d.tx_failed);
            }
        }
    }
    if let (Some(p), Some(b)) = (s.pod_b_rx_packets, s.pod_b_rx_bytes) {
        if let Some(avg) = b.checked_div(p) {
            let _ = write!(l, "; pod b received {p} skbs, avg {avg} B");
        }
    }
    let c = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let _ = write!(
        l,
        "; sender: fast retransmits {}, DSACKs received {}, reordering seen {}, loss probes {}, timeouts {}; receiver: out-of-order {}, checksum errors {}",
        c(&s.pod_a_tcp, "TcpExtTCPFastRetrans"),
        c(&s.pod_a_tcp, "TcpExtTCPDSACKRecv"),
        c(&s.pod_a_tcp, "TcpExtTCPSACKReorder"),
        c(&s.pod_a_tcp, "TcpExtTCPLossProbes"),
        c(&s.pod_a_tcp, "TcpExtTCPTimeouts"),
        c(&s.pod_b_tcp, "TcpExtTCPOFOQueue"),
        c(&s.pod_b_tcp, "TcpInCsumErrors")
    );
    if !s.link_drops.is_empty() {
        let d: Vec<String> = s.link_drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = write!(l, "; interface drops: {}", d.join(", "));
    }
    if let Some(d) = s.backlog_drops.filter(|d| *d > 0) {
        let _ = write!(l, "; input backlog drops {d}");
    }
    if let Some(d) = s.ring_drops.filter(|d| *d > 0) {
        let _ = write!(l, "; ring drops {d}");
    }
    l
}

/// The Markdown report (also the stdout table).
pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# bench portkinds ({})\n", s.started_utc);
    let _ = writeln!(
        o,
        "{} round(s), one iperf3 TCP stream pod a -> pod b for {} s per kind, kinds interleaved (order rotating); medians. \
         Pods at default offloads. Forwarder: one thread on core {} ({}), every frame passed whole with its vnet header; \
         AF_PACKET kinds keep the node's stack off their frames with an nftables netdev ingress drop (`packet_vnet_stack_drop`: \
         the IP stack drops them). Machine: {} ({} cores), kernel {}, load average {} at the start, {} at the end.\n",
        s.params.rounds,
        s.params.seconds,
        s.params.fwd_core,
        if s.params.busy_poll { "busy-polling" } else { "sleeping in epoll_wait when idle" },
        s.env.host.cpu,
        s.env.host.online_cpus,
        s.env.host.kernel,
        s.env.host.loadavg_start,
        s.env.host.loadavg_end
    );
    let _ = writeln!(o, "| kind | Gbit/s | vs bridge | retransmissions | backlog drops | forwarder CPU s/GB | machine busy s/GB | frames a -> b | frames b -> a | pod b skbs: avg B, per frame sent |");
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |");
    for r in &s.rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}, {} |",
            r.kind.name(),
            num(r.gbps, 2),
            num(r.vs_kernel_bridge, 2),
            num(r.retransmits, 0),
            num(r.backlog_drops, 0),
            num(r.fwd_cpu_s_per_gb, 3),
            num(r.busy_cpu_s_per_gb, 3),
            r.a_to_b.text(),
            r.b_to_a.text(),
            num(r.pod_b_avg_rx_skb_bytes, 0),
            num(r.pod_b_skbs_per_frame, 2)
        );
    }
    let _ = writeln!(o, "\nPer round (Gbit/s):\n");
    for r in &s.rows {
        let _ = writeln!(o, "- {}: {}", r.kind.name(), r.gbps_rounds.iter().map(|g| format!("{g:.2}")).collect::<Vec<_>>().join(", "));
    }
    let _ = writeln!(o, "\nPods' eth0 offloads:\n");
    for r in &s.rows {
        let _ = writeln!(o, "- {}: {}", r.kind.name(), r.pod_offloads);
    }
    let drops: Vec<String> = s.rows.iter().filter_map(|r| r.ring_drops.map(|d| format!("{} {d}", r.kind.name()))).collect();
    if !drops.is_empty() {
        let _ = writeln!(o, "\nAF_PACKET ring-full drops (highest turn): {}", drops.join(", "));
    }
    o.push_str(&section("\nNotes:\n\n", "- ", &s.notes));
    o
}

pub fn files(s: &Summary) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![("portkinds.json", crate::harness::report::json(s)?), ("portkinds.md", markdown(s))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_add_up_over_rounds() {
        let mut f = Frames::default();
        f.add(&DirStats { frames: 2, bytes: 3000, max_frame: 1514, ..DirStats::default() });
        f.add(&DirStats { frames: 2, bytes: 130_000, max_frame: 65_000, over_1514: 2, ..DirStats::default() });
        assert_eq!(f.frames, 4);
        assert_eq!(f.max_bytes, 65_000);
        assert_eq!(f.avg_bytes, Some(33_250.0));
        assert_eq!(f.text(), "max 65000 / avg 33250 B, 50% > 1514 B");
        assert_eq!(Frames::default().text(), "-");
    }
}
