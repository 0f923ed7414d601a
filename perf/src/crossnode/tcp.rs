//! One TCP stream pod a -> pod b with iperf3: the server (`iperf3 -s -1`) in pod b, the client
//! (`iperf3 -c B -t SECONDS -J`) in pod a, both under `taskset -c GEN_CORE` (the forwarding
//! core is left to the forwarders). The figure is the receiver's throughput over the run
//! (`end.sum_received.bits_per_second`), next to the sender's retransmissions.
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;

use crate::apps::load::{iperf3_figure, iperf3_report};
use crate::sys::{self, Proc};

/// The server's port.
pub const PORT: u16 = 5201;

#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    pub gbps: f64,
    pub sender_gbps: f64,
    pub retransmits: u64,
    pub seconds: f64,
}

/// Runs one stream of `seconds` from `client_ns` to `server_ip` in `server_ns`.
pub fn stream(client_ns: &str, server_ns: &str, server_ip: Ipv4Addr, seconds: u32, core: usize, workdir: &Path) -> Result<TcpResult> {
    let core = core.to_string();
    let port = PORT.to_string();
    let mut server = Proc::spawn(
        "iperf3 server",
        &["ip", "netns", "exec", server_ns, "taskset", "-c", &core, "iperf3", "-s", "-1", "-p", &port, "--forceflush"],
        workdir.join("iperf3-server.log"),
    )?;
    server.wait_for_log("Server listening", Duration::from_secs(10))?;
    let secs = seconds.to_string();
    let ip = server_ip.to_string();
    let mut client = Proc::spawn(
        "iperf3 client",
        &["ip", "netns", "exec", client_ns, "taskset", "-c", &core, "iperf3", "-c", &ip, "-p", &port, "-t", &secs, "-J"],
        workdir.join("iperf3-client.log"),
    )?;
    let limit = Duration::from_secs(u64::from(seconds) + 20);
    let mut waited = Duration::ZERO;
    let st = loop {
        if let Some(st) = client.wait_timeout(Duration::from_millis(200)) {
            break st;
        }
        waited += Duration::from_millis(200);
        if sys::interrupted() {
            return Err(sys::Interrupted.into());
        }
        if waited >= limit {
            client.stop(sys::Signal::SIGINT, false, Duration::from_secs(3));
            server.stop(sys::Signal::SIGTERM, false, Duration::from_secs(3));
            bail!("iperf3 overran {limit:?}:\n    {}", client.log_tail(8));
        }
    };
    server.stop(sys::Signal::SIGTERM, false, Duration::from_secs(3));
    let v = iperf3_report(&client, st)?;
    let f = |p: &str| iperf3_figure(&v, p);
    Ok(TcpResult {
        gbps: crate::stats::round_to(f("/end/sum_received/bits_per_second")? / 1e9, 3),
        sender_gbps: crate::stats::round_to(f("/end/sum_sent/bits_per_second")? / 1e9, 3),
        retransmits: v.pointer("/end/sum_sent/retransmits").and_then(Value::as_u64).unwrap_or(0),
        seconds: crate::stats::round_to(f("/end/sum_received/seconds")?, 2),
    })
}
