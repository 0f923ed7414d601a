//! One measurement with pktgen, the same generator for every path: the sender in the source
//! namespace on the generator's core, the receiver (an AF_XDP socket on pod b's `eth0`, which
//! takes every frame there) on the same core, UDP flows from 256 source ports.
//!
//! Contract:
//! - [`rate`]: `pktgen run --rate max` (or a given rate: `rate_at`) for `duration`; the figure is frames per second received
//!   at b (pktgen's matched frames between the first and the last), next to what was offered and
//!   lost. The forwarder's CPU is sampled over a window inside the run (after `warmup`): the
//!   forwarder process's CPU time (all threads, schedstat) plus `ksoftirqd/CORE`'s when it is a process, the forwarding
//!   core's softirq time (from /proc/stat) for the kernel, or the forwarding core's busy time
//!   (from /proc/stat: everything run there, for forwarders that are several processes, or the
//!   kernel and processes together), divided by the frames received in that window (received
//!   rate x window).
//! - [`ndr`]: `pktgen rfc2544` (binary search for the highest rate without loss, or with at
//!   most a given share lost: `ndr_tolerating`; trials of `trial` seconds, `resolution`, at most
//!   `max_trials`) between `min_rate` and `max_rate`.
//! - [`latency`]: `pktgen run --rate R --busy-poll` for `duration`: one-way latency p50 / p99 /
//!   p99.9 (same clock at both ends) at a fixed rate every path carries without loss.
//!
//! Each pktgen is stopped (SIGINT, then SIGKILL) if it overruns or the run is interrupted
//! (SIGINT/SIGTERM: the measurement then ends with `sys::Interrupted`); its output is kept for
//! errors.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::sys::{self, CoreTimes, Proc};

/// Where the traffic comes from and goes to.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub tx_netns: &'static str,
    pub rx_netns: &'static str,
    pub dst_ip: String,
    pub dst_port: u16,
    pub dst_mac: String,
    pub src_ports: String,
}

/// How the forwarder's CPU time is read.
#[derive(Debug, Clone, Copy)]
pub enum CpuSource {
    /// A process (switch, ovs-vswitchd): all its threads.
    Process(u32),
    /// The kernel: softirq time of the forwarding core.
    Softirq(usize),
    /// Everything the forwarding core ran (busy time): several forwarder processes pinned there.
    CoreBusy(usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct RateResult {
    pub pps: u64,
    pub offered_pps: u64,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub mean_frame_bytes: f64,
    /// Forwarder CPU per frame received in the window, ns.
    pub cpu_ns_per_pkt: Option<f64>,
    /// Share of one core the forwarder used in the window.
    pub cpu_util: Option<f64>,
    /// Busy share of each core in the window.
    pub core_busy: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NdrResult {
    pub ndr_pps: Option<u64>,
    pub generator_limited: bool,
    pub trials: usize,
    pub p50_ns_at_ndr: Option<u64>,
    pub p99_ns_at_ndr: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub rate_pps: u64,
    pub received: u64,
    pub lost: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

pub struct Gen<'a> {
    pub pktgen: &'a Path,
    pub gen_core: usize,
    pub fwd_core: usize,
    pub workdir: &'a Path,
}

impl Gen<'_> {
    fn base(&self, cmd: &str, t: &Traffic, size: &str) -> Vec<String> {
        let core = self.gen_core.to_string();
        let mut v: Vec<String> = vec![self.pktgen.display().to_string(), cmd.into()];
        for a in [
            "--netns", t.tx_netns, "-i", "eth0", "--rx-netns", t.rx_netns, "--rx-iface", "eth0", "--core", &core, "--rx-core", &core,
            "--dst-ip", &t.dst_ip, "--dst-mac", &t.dst_mac, "--src-port", &t.src_ports, "--size", size, "--json", "--quiet",
        ] {
            v.push(a.to_string());
        }
        v.push("--dst-port".into());
        v.push(t.dst_port.to_string());
        v
    }

    /// Runs pktgen to completion (at most `limit`); its JSON report.
    fn run_json(&self, name: &str, args: &[String], limit: Duration, mut during: impl FnMut(&mut Proc) -> Result<()>) -> Result<Value> {
        let log = self.workdir.join(format!("{name}.log"));
        let mut p = Proc::spawn(name, args, log)?;
        during(&mut p)?;
        let end = Instant::now() + limit;
        while p.wait_timeout(Duration::from_millis(100)).is_none() {
            if sys::interrupted() {
                p.stop(sys::Signal::SIGINT, false, Duration::from_secs(3));
                return Err(sys::Interrupted.into());
            }
            if Instant::now() >= end {
                p.stop(sys::Signal::SIGINT, false, Duration::from_secs(3));
                bail!("{name} overran {limit:?}:\n    {}", p.log_tail(8));
            }
        }
        let text = p.log_text();
        let st = p.exited().ok_or_else(|| anyhow!("{name}: no exit status"))?;
        let json = text.lines().rev().find(|l| l.starts_with('{')).ok_or_else(|| anyhow!("{name} ({st}) printed no JSON:\n    {}", p.log_tail(8)))?;
        let v: Value = serde_json::from_str(json).with_context(|| format!("{name}: JSON report"))?;
        if !st.success() && v.get("rfc2544").is_none() {
            bail!("{name} exited with {st}:\n    {}", p.log_tail(8));
        }
        Ok(v)
    }

    pub fn rate(&self, t: &Traffic, size: &str, duration: f64, warmup: f64, cpu: CpuSource) -> Result<RateResult> {
        self.rate_at(t, size, None, duration, warmup, cpu)
    }

    /// [`Gen::rate`] offering `offered` frames per second (None: as many as it can).
    pub fn rate_at(&self, t: &Traffic, size: &str, offered: Option<u64>, duration: f64, warmup: f64, cpu: CpuSource) -> Result<RateResult> {
        let mut args = self.base("run", t, size);
        let rate = offered.map_or_else(|| "max".to_string(), |r| r.to_string());
        args.extend(["--rate".into(), rate, "--duration".into(), format!("{}ms", (duration * 1000.0) as u64), "--drain".into(), "300ms".into()]);
        let window = (duration - warmup - 0.3).max(0.3);
        let mut sample: Option<(f64, Vec<f64>, Option<f64>)> = None;
        let v = self.run_json("pktgen-rate", &args, Duration::from_secs_f64(duration + 20.0), |p| {
            p.wait_for_log("pktgen: sending", Duration::from_secs(15))?;
            sys::nap(Duration::from_secs_f64(warmup))?;
            let (c0, f0, t0) = (CoreTimes::read(), fwd_cpu(cpu, self.fwd_core), Instant::now());
            sys::nap(Duration::from_secs_f64(window))?;
            let (c1, f1, el) = (CoreTimes::read(), fwd_cpu(cpu, self.fwd_core), t0.elapsed().as_secs_f64());
            let busy = c0.shares(&c1).iter().map(|s| s.busy).collect();
            let used = match (f0, f1) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
                _ => None,
            };
            sample = Some((el, busy, used));
            Ok(())
        })?;
        let tx = v.get("tx").ok_or_else(|| anyhow!("pktgen report without tx"))?;
        let rx = v.get("rx").ok_or_else(|| anyhow!("pktgen report without rx"))?;
        let u = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        let pps = u(rx, "pps");
        let (el, core_busy, used) = sample.unwrap_or((0.0, Vec::new(), None));
        let cpu_util = used.map(|s| s / el.max(1e-9));
        let cpu_ns_per_pkt = used.filter(|_| pps > 0).map(|s| s * 1e9 / (pps as f64 * el));
        Ok(RateResult {
            pps,
            offered_pps: u(tx, "pps"),
            sent: u(tx, "sent"),
            received: u(rx, "received"),
            lost: u(rx, "lost"),
            mean_frame_bytes: v.pointer("/traffic/mean_size").and_then(Value::as_f64).unwrap_or(0.0),
            cpu_ns_per_pkt,
            cpu_util,
            core_busy,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn ndr(&self, t: &Traffic, size: &str, trial: f64, max_rate: u64, min_rate: u64, resolution: f64, max_trials: u32) -> Result<NdrResult> {
        self.ndr_tolerating(t, size, trial, max_rate, min_rate, resolution, max_trials, 0.0)
    }

    /// [`Gen::ndr`] where a trial passes with a loss of at most `loss_tolerance` (a share of
    /// what was sent; RFC 2544's is 0).
    #[allow(clippy::too_many_arguments)]
    pub fn ndr_tolerating(
        &self,
        t: &Traffic,
        size: &str,
        trial: f64,
        max_rate: u64,
        min_rate: u64,
        resolution: f64,
        max_trials: u32,
        loss_tolerance: f64,
    ) -> Result<NdrResult> {
        let mut args = self.base("rfc2544", t, size);
        args.extend([
            "--trial".into(),
            format!("{}ms", (trial * 1000.0) as u64),
            "--max-rate".into(),
            max_rate.to_string(),
            "--min-rate".into(),
            min_rate.to_string(),
            "--resolution".into(),
            format!("{}%", resolution * 100.0),
            "--max-trials".into(),
            max_trials.to_string(),
            "--drain".into(),
            "200ms".into(),
        ]);
        if loss_tolerance > 0.0 {
            args.extend(["--loss-tolerance".into(), format!("{}%", loss_tolerance * 100.0)]);
        }
        let limit = Duration::from_secs_f64((trial + 3.0) * (max_trials as f64 + 1.0) + 15.0);
        let v = self.run_json("pktgen-rfc2544", &args, limit, |_| Ok(()))?;
        let r = v.get("rfc2544").ok_or_else(|| anyhow!("pktgen rfc2544 report without its search result"))?;
        Ok(NdrResult {
            ndr_pps: r.get("throughput_pps").and_then(Value::as_u64),
            generator_limited: r.get("generator_limited").and_then(Value::as_bool).unwrap_or(false),
            trials: r.get("trials").and_then(Value::as_array).map_or(0, std::vec::Vec::len),
            p50_ns_at_ndr: r.pointer("/at_throughput/latency/p50_ns").and_then(Value::as_u64),
            p99_ns_at_ndr: r.pointer("/at_throughput/latency/p99_ns").and_then(Value::as_u64),
        })
    }

    pub fn latency(&self, t: &Traffic, size: &str, rate: u64, duration: f64) -> Result<LatencyResult> {
        let mut args = self.base("run", t, size);
        args.extend([
            "--rate".into(),
            rate.to_string(),
            "--duration".into(),
            format!("{}ms", (duration * 1000.0) as u64),
            "--busy-poll".into(),
            "--drain".into(),
            "200ms".into(),
        ]);
        let v = self.run_json("pktgen-latency", &args, Duration::from_secs_f64(duration + 20.0), |_| Ok(()))?;
        let u = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
        if v.get("latency").is_none_or(Value::is_null) {
            bail!("pktgen measured no latency (nothing received?)");
        }
        Ok(LatencyResult {
            rate_pps: rate,
            received: u("/rx/received"),
            lost: u("/rx/lost"),
            p50_ns: u("/latency/p50_ns"),
            p99_ns: u("/latency/p99_ns"),
            p999_ns: u("/latency/p999_ns"),
            max_ns: u("/latency/max_ns"),
        })
    }
}

/// CPU time (ns) of the forwarder so far. A process forwarder's own threads run the kernel's
/// softirq work they cause inline (copy-mode transmit, the receiver's veth NAPI) unless the
/// kernel defers it to `ksoftirqd/CORE`: that thread's time counts too.
fn fwd_cpu(c: CpuSource, fwd_core: usize) -> Option<u64> {
    match c {
        CpuSource::Process(pid) => Some(sys::process_cpu_ns(pid)? + ksoftirqd_pid(fwd_core).and_then(sys::process_cpu_ns).unwrap_or(0)),
        CpuSource::Softirq(core) => softirq_ns(core),
        CpuSource::CoreBusy(core) => CoreTimes::read().0.get(core).map(|j| j.busy * 10_000_000),
    }
}

/// pid of the kernel thread `ksoftirqd/CORE`.
pub fn ksoftirqd_pid(core: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{core}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        (std::fs::read_to_string(e.path().join("comm")).ok()?.trim() == want).then_some(pid)
    })
}

/// Softirq time of `core` so far in ns (/proc/stat counts in USER_HZ ticks, 100 per second
/// in the kernel's ABI whatever its HZ; the same for the busy time of `CoreBusy`).
fn softirq_ns(core: usize) -> Option<u64> {
    CoreTimes::read().0.get(core).map(|j| j.softirq * 10_000_000)
}
