//! The summary of `bench apps`: medians over rounds per setup and workload, ratios
//! switch/kernel, the kernel's losses at the switch's door, the table and the result files.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::setups::Setup;
use super::{Env, Params, Sample, Workload};
use crate::harness::report::section;
use crate::stats::{median_of as med, round_to};

/// Everything a run reports; the first ten fields are the JSON keys, in its order.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub switch_tcp_gbps: Option<f64>,
    pub kernel_tcp_gbps: Option<f64>,
    pub switch_svc_tcp_gbps: Option<f64>,
    pub kernel_svc_tcp_gbps: Option<f64>,
    pub switch_rr_per_s: Option<f64>,
    pub kernel_rr_per_s: Option<f64>,
    pub switch_conn_per_s: Option<f64>,
    pub kernel_conn_per_s: Option<f64>,
    pub switch_cpu_per_req_us: Option<f64>,
    pub kernel_cpu_per_req_us: Option<f64>,
    /// `--streams` streams (8 by default).
    pub switch_tcp_multi_gbps: Option<f64>,
    pub kernel_tcp_multi_gbps: Option<f64>,
    pub switch_svc_tcp_multi_gbps: Option<f64>,
    pub kernel_svc_tcp_multi_gbps: Option<f64>,
    pub switch_rr_p99_us: Option<f64>,
    pub kernel_rr_p99_us: Option<f64>,
    pub switch_conn_p99_us: Option<f64>,
    pub kernel_conn_p99_us: Option<f64>,
    pub switch_conn_cpu_per_req_us: Option<f64>,
    pub kernel_conn_cpu_per_req_us: Option<f64>,
    /// Frames the kernel lost before the switch saw them during the one-stream pod -> pod run,
    /// all ports, the highest of the rounds.
    pub switch_tcp_kernel_lost: Option<u64>,
    pub rows: Vec<Row>,
    pub complete: bool,
    pub started_utc: String,
    pub elapsed_s: f64,
    pub params: Params,
    pub env: Env,
    pub notes: Vec<String>,
    pub samples: Vec<Sample>,
}

/// One workload, both setups: medians over rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: Workload,
    /// Gbit/s (TCP) or requests/s (HTTP).
    pub switch: Option<f64>,
    pub kernel: Option<f64>,
    pub ratio: Option<f64>,
    pub switch_rounds: Vec<f64>,
    pub kernel_rounds: Vec<f64>,
    pub switch_p99_us: Option<f64>,
    pub kernel_p99_us: Option<f64>,
    pub switch_cpu_s: Option<f64>,
    pub kernel_cpu_s: Option<f64>,
    pub switch_cpu_per_req_us: Option<f64>,
    pub kernel_cpu_per_req_us: Option<f64>,
    pub switch_retransmits: Option<f64>,
    pub kernel_retransmits: Option<f64>,
    /// Switch: frames lost in the kernel per port, per round.
    pub kernel_lost: BTreeMap<String, Vec<u64>>,
}

fn figure(s: &Sample) -> Option<f64> {
    s.tcp.as_ref().map(|t| t.gbps).or_else(|| s.http.as_ref().map(|h| h.req_per_s))
}

pub fn summarize(samples: Vec<Sample>, workloads: &[Workload], params: Params, env: Env, notes: Vec<String>, started_utc: String, elapsed: f64) -> Summary {
    let pick = |setup: Setup, w: Workload| -> Vec<&Sample> { samples.iter().filter(|s| s.setup == setup && s.workload == w).collect() };
    let mut rows = Vec::new();
    let mut complete = true;
    for &w in workloads {
        let (sw, k) = (pick(Setup::Switch, w), pick(Setup::Kernel, w));
        for setup in &params.setups {
            let got = samples.iter().filter(|s| s.setup == *setup && s.workload == w && figure(s).is_some()).count();
            complete &= got == params.rounds as usize;
        }
        let (a, b) = (med(&sw, figure), med(&k, figure));
        let mut lost: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for s in &sw {
            for l in &s.kernel_lost {
                lost.entry(l.port.clone()).or_default().push(l.total());
            }
        }
        rows.push(Row {
            workload: w,
            switch: a,
            kernel: b,
            ratio: a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| round_to(a / b, 2)),
            switch_rounds: sw.iter().filter_map(|s| figure(s)).collect(),
            kernel_rounds: k.iter().filter_map(|s| figure(s)).collect(),
            switch_p99_us: med(&sw, |s| s.http.as_ref().map(|h| h.p99_us)),
            kernel_p99_us: med(&k, |s| s.http.as_ref().map(|h| h.p99_us)),
            switch_cpu_s: med(&sw, |s| s.tcp.as_ref().and_then(|t| t.cpu_s).or_else(|| s.http.as_ref().and_then(|h| h.cpu_s))),
            kernel_cpu_s: med(&k, |s| s.tcp.as_ref().and_then(|t| t.cpu_s).or_else(|| s.http.as_ref().and_then(|h| h.cpu_s))),
            switch_cpu_per_req_us: med(&sw, |s| s.http.as_ref().and_then(|h| h.cpu_per_req_us)),
            kernel_cpu_per_req_us: med(&k, |s| s.http.as_ref().and_then(|h| h.cpu_per_req_us)),
            switch_retransmits: med(&sw, |s| s.tcp.as_ref().map(|t| t.retransmits as f64)),
            kernel_retransmits: med(&k, |s| s.tcp.as_ref().map(|t| t.retransmits as f64)),
            kernel_lost: lost,
        });
    }
    let row = |w: Workload| rows.iter().find(|r| r.workload == w);
    let get = |w: Workload, f: fn(&Row) -> Option<f64>| row(w).and_then(f);
    let tcp_lost = samples
        .iter()
        .filter(|s| s.setup == Setup::Switch && s.workload == Workload::Tcp1 && !s.kernel_lost.is_empty())
        .map(|s| s.kernel_lost.iter().map(super::setups::PortLoss::total).sum::<u64>())
        .max();
    Summary {
        switch_tcp_gbps: get(Workload::Tcp1, |r| r.switch),
        kernel_tcp_gbps: get(Workload::Tcp1, |r| r.kernel),
        switch_svc_tcp_gbps: get(Workload::SvcTcp1, |r| r.switch),
        kernel_svc_tcp_gbps: get(Workload::SvcTcp1, |r| r.kernel),
        switch_rr_per_s: get(Workload::HttpKeepAlive, |r| r.switch),
        kernel_rr_per_s: get(Workload::HttpKeepAlive, |r| r.kernel),
        switch_conn_per_s: get(Workload::HttpClose, |r| r.switch),
        kernel_conn_per_s: get(Workload::HttpClose, |r| r.kernel),
        switch_cpu_per_req_us: get(Workload::HttpKeepAlive, |r| r.switch_cpu_per_req_us),
        kernel_cpu_per_req_us: get(Workload::HttpKeepAlive, |r| r.kernel_cpu_per_req_us),
        switch_tcp_multi_gbps: get(Workload::TcpN, |r| r.switch),
        kernel_tcp_multi_gbps: get(Workload::TcpN, |r| r.kernel),
        switch_svc_tcp_multi_gbps: get(Workload::SvcTcpN, |r| r.switch),
        kernel_svc_tcp_multi_gbps: get(Workload::SvcTcpN, |r| r.kernel),
        switch_rr_p99_us: get(Workload::HttpKeepAlive, |r| r.switch_p99_us),
        kernel_rr_p99_us: get(Workload::HttpKeepAlive, |r| r.kernel_p99_us),
        switch_conn_p99_us: get(Workload::HttpClose, |r| r.switch_p99_us),
        kernel_conn_p99_us: get(Workload::HttpClose, |r| r.kernel_p99_us),
        switch_conn_cpu_per_req_us: get(Workload::HttpClose, |r| r.switch_cpu_per_req_us),
        kernel_conn_cpu_per_req_us: get(Workload::HttpClose, |r| r.kernel_cpu_per_req_us),
        switch_tcp_kernel_lost: tcp_lost,
        rows,
        complete,
        started_utc,
        elapsed_s: round_to(elapsed, 1),
        params,
        env,
        notes,
        samples,
    }
}

fn title(w: Workload, streams: u32) -> String {
    match w {
        Workload::Tcp1 => "iperf3, 1 stream, pod -> pod (Gbit/s)".into(),
        Workload::TcpN => format!("iperf3, {streams} streams, pod -> pod (Gbit/s)"),
        Workload::SvcTcp1 => "iperf3, 1 stream, pod -> ClusterIP -> pod (Gbit/s)".into(),
        Workload::SvcTcpN => format!("iperf3, {streams} streams, pod -> ClusterIP -> pod (Gbit/s)"),
        Workload::HttpKeepAlive => "wrk -> nginx via ClusterIP, keep-alive (req/s)".into(),
        Workload::HttpClose => "wrk -> nginx via ClusterIP, Connection: close (req/s)".into(),
    }
}

fn num(x: Option<f64>) -> String {
    match x {
        None => "-".into(),
        Some(v) if v >= 1000.0 => crate::stats::thousands(v.round() as u64),
        Some(v) => format!("{v:.2}"),
    }
}

fn extra(r: &Row) -> (String, String) {
    let side = |p99: Option<f64>, cpu: Option<f64>, per: Option<f64>, rt: Option<f64>| -> String {
        let mut v = Vec::new();
        if let Some(p) = p99 {
            v.push(format!("p99 {p:.0} µs"));
        }
        if let Some(c) = cpu {
            v.push(format!("CPU {c:.2} s"));
        }
        if let Some(c) = per {
            v.push(format!("{c:.1} µs/req"));
        }
        if let Some(r) = rt {
            v.push(format!("{r:.0} retr."));
        }
        v.join(", ")
    };
    (
        side(r.switch_p99_us, r.switch_cpu_s, r.switch_cpu_per_req_us, r.switch_retransmits),
        side(r.kernel_p99_us, r.kernel_cpu_s, r.kernel_cpu_per_req_us, r.kernel_retransmits),
    )
}

/// The Markdown table (also the stdout table).
pub fn markdown(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# bench apps ({})\n", s.started_utc);
    let _ = writeln!(
        o,
        "{} round(s) x {} s per workload, interleaved; medians. switch: podswitch (worker on core {}{}, pods' tx checksum offload off); \
         kernel: Linux bridge, default offloads, kube-proxy nftables rules. CPU: switch process + the pods' programs + ksoftirqd.\n",
        s.params.rounds,
        s.params.seconds,
        s.params.fwd_core,
        if s.params.busy_poll { ", busy-poll" } else { ", adaptive polling" }
    );
    let _ = writeln!(o, "| workload | podswitch | kernel | ratio | podswitch detail | kernel detail |");
    let _ = writeln!(o, "| --- | ---: | ---: | ---: | --- | --- |");
    for r in &s.rows {
        let (a, b) = extra(r);
        let _ = writeln!(o, "| {} | {} | {} | {} | {a} | {b} |", title(r.workload, s.params.streams), num(r.switch), num(r.kernel), r.ratio.map_or("-".into(), |x| format!("{x:.2}")));
    }
    let _ = writeln!(o, "\nPer round (switch / kernel):\n");
    for r in &s.rows {
        let f = |v: &[f64]| v.iter().map(|x| num(Some(*x))).collect::<Vec<_>>().join(", ");
        let _ = writeln!(o, "- {}: {} / {}", r.workload_name(), f(&r.switch_rounds), f(&r.kernel_rounds));
    }
    let _ = writeln!(o, "\nKERNEL_LOST per switch port (frames the kernel dropped before the switch saw them; per round):\n");
    for r in &s.rows {
        if r.kernel_lost.is_empty() {
            continue;
        }
        let ports: Vec<String> = r.kernel_lost.iter().map(|(p, v)| format!("{p} {}", v.iter().map(u64::to_string).collect::<Vec<_>>().join("/"))).collect();
        let _ = writeln!(o, "- {}: {}", r.workload_name(), ports.join("; "));
    }
    o.push_str(&section("\nNotes:\n\n", "- ", &s.notes));
    o
}

impl Row {
    fn workload_name(&self) -> &'static str {
        self.workload.name()
    }
}

pub fn table(s: &Summary) -> String {
    markdown(s)
}

pub fn files(s: &Summary) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![("apps.json", crate::harness::report::json(s)?), ("apps.md", markdown(s))])
}
