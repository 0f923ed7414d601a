//! The real programs `bench apps` runs and what it reads from them:
//!
//! - [`iperf3`]: `iperf3 -s -1` in pod b, `iperf3 -c DST -P STREAMS -t SECONDS -J` in pod a; the
//!   figure is the receiver's throughput (`end.sum_received.bits_per_second`), next to the
//!   sender's retransmissions.
//! - [`wrk`]: nginx (`nginx-light`, `worker_processes auto`, `return 200`, no access log) in pod
//!   b, `wrk -t2 -c CONNS -d SECONDS --latency` in pod a against the ClusterIP, keep-alive or
//!   with `Connection: close` (a new TCP connection per request); requests per second, the p99
//!   latency of wrk's `Latency Distribution`, socket errors.
//!
//! CPU ([`CpuMeter`]): what the run's programs and the forwarding used, in ns: the switch
//! process (all threads; schedstat) + the programs in the pods (iperf3, nginx and its workers,
//! wrk: the children this process reaped during the run, from its cumulative child times in
//! /proc/self/stat, 10 ms ticks) + the `ksoftirqd/N` threads of every core. The kernel runs
//! the softirq work (veth, bridge, netfilter, TCP receive) inside whichever of these threads
//! caused it, or in ksoftirqd when it defers it, so the kernel's forwarding is in that sum too.
//! Not counted: softirq work that interrupts an idle core (small here) and the rest of the
//! machine. Programs are not pinned: the scheduler spreads them over both cores as it would on
//! a node; the switch's worker is pinned to its core.
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::harness::pktgen::ksoftirqd_pid;
use crate::sys::{self, Proc};

#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    pub streams: u32,
    pub gbps: f64,
    pub retransmits: u64,
    pub seconds: f64,
    pub cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpResult {
    pub connections: u32,
    pub keep_alive: bool,
    pub requests: u64,
    pub req_per_s: f64,
    pub p99_us: f64,
    pub p50_us: f64,
    pub socket_errors: u64,
    pub non_2xx: u64,
    pub seconds: f64,
    pub cpu_s: Option<f64>,
    pub cpu_per_req_us: Option<f64>,
}

/// CPU used between [`CpuMeter::start`] and [`CpuMeter::stop`] (see the module contract).
pub struct CpuMeter {
    switch: Option<u32>,
    start_ns: Option<u64>,
}

fn children_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3; cutime and cstime are fields 16 and 17.
    let cu: u64 = f.get(13)?.parse().ok()?;
    let cs: u64 = f.get(14)?.parse().ok()?;
    Some((cu + cs) * 10_000_000)
}

fn total_ns(switch: Option<u32>) -> Option<u64> {
    let sw = match switch {
        Some(pid) => sys::process_cpu_ns(pid)?,
        None => 0,
    };
    let soft: u64 = (0..sys::online_cpus()).filter_map(ksoftirqd_pid).filter_map(sys::process_cpu_ns).sum();
    Some(sw + soft + children_cpu_ns()?)
}

impl CpuMeter {
    pub fn start(switch: Option<u32>) -> CpuMeter {
        CpuMeter { switch, start_ns: total_ns(switch) }
    }

    /// Seconds of CPU since `start` (call after the run's programs were reaped).
    pub fn stop(&self) -> Option<f64> {
        let end = total_ns(self.switch)?;
        Some(crate::stats::round_to(end.checked_sub(self.start_ns?)? as f64 / 1e9, 3))
    }
}

/// Where and how long a workload runs: the client's and the server's namespaces, seconds,
/// the work directory (logs, nginx's files) and the switch process whose CPU counts.
pub struct Run<'a> {
    pub client_ns: &'a str,
    pub server_ns: &'a str,
    pub seconds: u32,
    pub workdir: &'a Path,
    pub switch: Option<u32>,
}

/// Waits for `p` up to `limit`, interruptibly; stops it on overrun.
fn wait(p: &mut Proc, limit: Duration) -> Result<std::process::ExitStatus> {
    let mut waited = Duration::ZERO;
    loop {
        if let Some(st) = p.wait_timeout(Duration::from_millis(200)) {
            return Ok(st);
        }
        waited += Duration::from_millis(200);
        if sys::interrupted() {
            p.stop(sys::Signal::SIGINT, false, Duration::from_secs(3));
            return Err(sys::Interrupted.into());
        }
        if waited >= limit {
            p.stop(sys::Signal::SIGINT, false, Duration::from_secs(3));
            bail!("{} overran {limit:?}:\n    {}", p.name, p.log_tail(8));
        }
    }
}

/// The JSON report (`-J`) of the iperf3 client `client` that exited with `st`; fails when there
/// is none or it says what went wrong.
pub fn iperf3_report(client: &Proc, st: std::process::ExitStatus) -> Result<Value> {
    let v: Value = serde_json::from_str(client.log_text().trim()).with_context(|| format!("iperf3 ({st}) printed no JSON:\n    {}", client.log_tail(8)))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// The number at JSON pointer `p` of an iperf3 report.
pub fn iperf3_figure(v: &Value, p: &str) -> Result<f64> {
    v.pointer(p).and_then(Value::as_f64).ok_or_else(|| anyhow!("iperf3's report has no {p}"))
}

/// One iperf3 run of `streams` streams from the client's namespace to `dst:port` (the server in
/// the server's).
pub fn iperf3(r: &Run, dst: Ipv4Addr, port: u16, streams: u32) -> Result<TcpResult> {
    let Run { client_ns, server_ns, seconds, workdir, switch } = *r;
    let port = port.to_string();
    let mut server = Proc::spawn(
        "iperf3 server",
        &["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", &port, "--forceflush"],
        workdir.join("iperf3-server.log"),
    )?;
    server.wait_for_log("Server listening", Duration::from_secs(10))?;
    let cpu = CpuMeter::start(switch);
    let (secs, p, ip) = (seconds.to_string(), streams.to_string(), dst.to_string());
    let mut client = Proc::spawn(
        "iperf3 client",
        &["ip", "netns", "exec", client_ns, "iperf3", "-c", &ip, "-p", &port, "-P", &p, "-t", &secs, "-J"],
        workdir.join("iperf3-client.log"),
    )?;
    let st = wait(&mut client, Duration::from_secs(u64::from(seconds) + 20));
    if server.wait_timeout(Duration::from_secs(3)).is_none() {
        server.stop(sys::Signal::SIGTERM, false, Duration::from_secs(3));
    }
    let cpu_s = cpu.stop();
    let v = iperf3_report(&client, st?)?;
    let f = |p: &str| iperf3_figure(&v, p);
    Ok(TcpResult {
        streams,
        gbps: crate::stats::round_to(f("/end/sum_received/bits_per_second")? / 1e9, 3),
        retransmits: v.pointer("/end/sum_sent/retransmits").and_then(Value::as_u64).unwrap_or(0),
        seconds: crate::stats::round_to(f("/end/sum_received/seconds")?, 2),
        cpu_s,
    })
}

/// nginx's configuration: serves `ok` on `port` from everything in `dir`.
pub fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
         \x20 server {{\n    listen {port} backlog=4096;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
    )
}

/// One wrk run against `http://dst:port/` from the client's namespace, nginx started in the
/// server's for it.
pub fn wrk(r: &Run, dst: Ipv4Addr, port: u16, connections: u32, keep_alive: bool) -> Result<HttpResult> {
    let Run { client_ns, server_ns, seconds, workdir, switch } = *r;
    let conf = workdir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(workdir, port))?;
    let conf_s = conf.to_str().context("path")?.to_string();
    let mut nginx = Proc::spawn("nginx", &["ip", "netns", "exec", server_ns, "nginx", "-c", &conf_s], workdir.join("nginx.log"))?;
    // Ready when the port accepts.
    let url = format!("http://{dst}:{port}/");
    let mut ready = false;
    for _ in 0..100 {
        if sys::run(&["ip", "netns", "exec", client_ns, "curl", "-s", "-m", "1", "-o", "/dev/null", &url]).is_ok() {
            ready = true;
            break;
        }
        if let Some(st) = nginx.exited() {
            bail!("nginx exited ({st}):\n    {}", nginx.log_tail(8));
        }
        sys::nap(Duration::from_millis(100))?;
    }
    if !ready {
        nginx.stop(sys::Signal::SIGQUIT, true, Duration::from_secs(3));
        bail!("nginx did not answer at {url} within 10 s");
    }
    let cpu = CpuMeter::start(switch);
    let secs = format!("{seconds}s");
    let c = connections.to_string();
    let mut a: Vec<&str> = vec!["ip", "netns", "exec", client_ns, "wrk", "-t2", "-c", &c, "-d", &secs, "--latency"];
    if !keep_alive {
        a.extend(["-H", "Connection: close"]);
    }
    a.push(&url);
    let mut client = Proc::spawn("wrk", &a, workdir.join("wrk.log"))?;
    let st = wait(&mut client, Duration::from_secs(u64::from(seconds) + 20));
    nginx.stop(sys::Signal::SIGQUIT, true, Duration::from_secs(5));
    let cpu_s = cpu.stop();
    let st = st?;
    let text = client.log_text();
    let mut r = parse_wrk(&text).with_context(|| format!("wrk ({st}) output not understood:\n    {}", client.log_tail(12)))?;
    r.connections = connections;
    r.keep_alive = keep_alive;
    r.cpu_s = cpu_s;
    r.cpu_per_req_us = cpu_s.filter(|_| r.requests > 0).map(|s| crate::stats::round_to(s * 1e6 / r.requests as f64, 2));
    Ok(r)
}

/// `250.00us`, `1.02ms`, `1.10s` -> microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mul)
}

/// wrk's report (with `--latency`).
pub fn parse_wrk(text: &str) -> Result<HttpResult> {
    let mut requests = None;
    let mut seconds = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut rps = None;
    let mut socket_errors = 0;
    let mut non_2xx = 0;
    for l in text.lines().map(str::trim) {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => p50 = duration_us(v),
            ["99%", v] => p99 = duration_us(v),
            [n, "requests", "in", t, ..] => {
                requests = n.parse::<u64>().ok();
                seconds = duration_us(t.trim_end_matches(',')).map(|us| us / 1e6);
            }
            ["Requests/sec:", v] => rps = v.parse::<f64>().ok(),
            ["Socket", "errors:", rest @ ..] => {
                socket_errors = rest.iter().filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok()).sum();
            }
            ["Non-2xx", "or", "3xx", "responses:", v] => non_2xx = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let (Some(requests), Some(req_per_s), Some(p99_us)) = (requests, rps, p99) else {
        bail!("no request count, Requests/sec or 99% latency");
    };
    Ok(HttpResult {
        connections: 0,
        keep_alive: true,
        requests,
        req_per_s: crate::stats::round_to(req_per_s, 0),
        p99_us: crate::stats::round_to(p99_us, 1),
        p50_us: crate::stats::round_to(p50.unwrap_or(0.0), 1),
        socket_errors,
        non_2xx,
        seconds: crate::stats::round_to(seconds.unwrap_or(0.0), 2),
        cpu_s: None,
        cpu_per_req_us: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 5s test @ http://10.96.0.10:80/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   380.12us  210.50us   8.01ms   90.12%
    Req/Sec    65.10k     3.20k   70.00k    80.00%
  Latency Distribution
     50%  340.00us
     75%  420.00us
     90%  520.00us
     99%    1.20ms
  650123 requests in 5.00s, 95.00MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
Requests/sec: 130024.60
Transfer/sec:     19.00MB
";

    #[test]
    fn wrk_report_is_read() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 650_123);
        assert_eq!(r.req_per_s, 130_025.0);
        assert_eq!(r.p99_us, 1200.0);
        assert_eq!(r.p50_us, 340.0);
        assert_eq!(r.socket_errors, 15);
        assert_eq!(r.seconds, 5.0);
    }

    #[test]
    fn wrk_report_without_percentiles_is_an_error() {
        assert!(parse_wrk("Requests/sec: 5\n").is_err());
    }
}
