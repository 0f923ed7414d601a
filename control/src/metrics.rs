//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr` (default 127.0.0.1:9090, `off`
//! disables it), in the text exposition format (version 0.0.4).
//!
//! Contract:
//! - The switch hands [`serve`] a provider that returns a [`MetricsSnapshot`]; every scrape
//!   calls it once and renders it with [`render`]. Nothing is cached between scrapes.
//! - `prometheus-client` writes the text (a collector over the snapshot, its Prometheus text
//!   encoder): escaping, number formats and the `_total` suffix are the crate's. The names, label
//!   names, types and HELP texts are this file's and stay as they are: dashboards query them
//!   (the tests hold the whole exposition of a sample snapshot).
//! - One request per connection, each on a short-lived thread (at most 8 at once); a client
//!   gets 5 s to send its request. `GET`/`HEAD /metrics` answer
//!   200, any other path 404, any other method 405.
//! - Names follow Prometheus conventions: `podswitch_` prefix, `_total` for counters, base units
//!   (`_bytes`, `_seconds`); every family has HELP and TYPE lines, label values are escaped.
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::{self, CONTENT_TYPE};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::encoding::NoLabelSet;
use switch::counters::PortTotals;
use switch::worker::poll_stats::{PollTotals, BURST_BUCKET_BOUNDS};

/// `--metrics-addr`: an address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    At(SocketAddr),
}

/// A `--metrics-addr` that is neither an address nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address:port (e.g. 127.0.0.1:9090) nor `off`")]
pub struct BadMetricsAddr(String);

impl FromStr for MetricsAddr {
    type Err = BadMetricsAddr;

    fn from_str(s: &str) -> Result<Self, BadMetricsAddr> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddr::Off);
        }
        s.parse::<SocketAddr>().map(MetricsAddr::At).map_err(|_| BadMetricsAddr(s.to_string()))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Off => f.write_str("off"),
            MetricsAddr::At(a) => write!(f, "{a}"),
        }
    }
}

/// The metrics options of `podswitch run` (flattened into `RunArgs`).
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics; `off` disables the endpoint.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: MetricsAddr,
}

/// Counters of one port (all its queues).
#[derive(Debug, Clone, Default)]
pub struct PortMetrics {
    /// The port's key (`namespace/name` of its pod, `host`, `uplink`).
    pub port: String,
    /// Its interface.
    pub interface: String,
    /// The switch's counters of the port (`tx_kicks` is not exported).
    pub totals: PortTotals,
    /// Frames the kernel dropped before the switch saw them, or refused to send.
    pub kernel_lost: u64,
}

/// Counters of one worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerMetrics {
    pub worker: usize,
    pub core: usize,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops of this worker by reason name (`no_route`, ...).
    pub drops: Vec<(String, u64)>,
    /// How it spent its time, its bursts and wake-ups.
    pub poll: PollTotals,
}

#[derive(Debug, Clone, Default)]
pub struct ConntrackMetrics {
    pub entries: u64,
    pub capacity: u64,
    /// New connections refused because the table was full or no slot was in reach.
    pub insert_failures: u64,
}

/// Sizes of the tables in force.
#[derive(Debug, Clone, Default)]
pub struct TableSizes {
    pub routes: u64,
    /// Service frontends (ClusterIP, NodePort, LoadBalancer, external IP ports).
    pub frontends: u64,
    pub backends: u64,
    /// Pods that some NetworkPolicy selects.
    pub policy_pods: u64,
}

/// Applying objects to the tables.
#[derive(Debug, Clone, Default)]
pub struct SyncMetrics {
    /// How long the last apply (view in -> tables published) took.
    pub last_duration_seconds: Option<f64>,
    /// When the last apply completed (Unix time).
    pub last_timestamp_seconds: Option<f64>,
    pub syncs: u64,
    /// Views not applied (bad manifests, objects that do not compile).
    pub manifest_errors: u64,
    /// Errors from the Kubernetes API (transport, watch, list).
    pub api_errors: u64,
    /// Whether the API source's last request got an answer; `None` with the directory source.
    pub api_connected: Option<bool>,
}

/// Everything one scrape reports.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub ports: Vec<PortMetrics>,
    pub workers: Vec<WorkerMetrics>,
    /// Drops by reason, all workers together (every reason, zeros included).
    pub drops: Vec<(String, u64)>,
    /// What the pipeline stages did besides dropping (`stage.counter`), all workers together.
    pub stages: Vec<(String, u64)>,
    pub conntrack: ConntrackMetrics,
    pub tables: TableSizes,
    pub sync: SyncMetrics,
    /// The agent's memory by table; `None` before the first apply.
    pub memory: Option<crate::memory::MemoryByTable>,
    /// `--l2-announce`: every address this node competes for, and whether it announces it.
    pub l2_announced: Option<Vec<(String, bool)>>,
}

/// One scrape's snapshot, written out by `prometheus-client` on each encode.
#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

/// Opens a counter family. `name` is the exposed name, `_total` included (the crate appends
/// `_total` to counters itself, so it is taken off here: the names in this file stay the ones
/// dashboards query).
fn counter_family<'s>(enc: &'s mut DescriptorEncoder, name: &'s str, help: &str) -> Result<MetricEncoder<'s>, fmt::Error> {
    let base = name.strip_suffix("_total").expect("counter names end with _total");
    enc.encode_descriptor(base, help, None, MetricType::Counter)
}

fn counter(family: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(family.encode_family(labels)?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        type PortField = fn(&PortMetrics) -> u64;
        let port_counters: [(&str, &str, PortField); 7] = [
            ("podswitch_port_rx_packets_total", "Frames received from the port.", |p| p.totals.rx_packets),
            ("podswitch_port_rx_bytes_total", "Bytes received from the port.", |p| p.totals.rx_bytes),
            ("podswitch_port_rx_dropped_total", "Frames received from the port and dropped.", |p| p.totals.rx_dropped),
            ("podswitch_port_tx_packets_total", "Frames sent to the port.", |p| p.totals.tx_packets),
            ("podswitch_port_tx_bytes_total", "Bytes sent to the port.", |p| p.totals.tx_bytes),
            ("podswitch_port_tx_dropped_total", "Frames for the port that could not be sent.", |p| p.totals.tx_dropped),
            (
                "podswitch_port_kernel_lost_total",
                "Frames of the port the kernel dropped before the switch saw them (empty fill ring, full RX ring) or refused to send.",
                |p| p.kernel_lost,
            ),
        ];
        for (name, help, get) in port_counters {
            let mut f = counter_family(&mut enc, name, help)?;
            for p in &s.ports {
                counter(&mut f, &[("port", p.port.as_str()), ("interface", p.interface.as_str())], get(p))?;
            }
        }
        type WorkerField = fn(&WorkerMetrics) -> u64;
        let worker_counters: [(&str, &str, WorkerField); 4] = [
            ("podswitch_worker_rx_packets_total", "Frames the worker received.", |w| w.rx_packets),
            ("podswitch_worker_rx_bytes_total", "Bytes the worker received.", |w| w.rx_bytes),
            ("podswitch_worker_tx_packets_total", "Frames the worker sent.", |w| w.tx_packets),
            ("podswitch_worker_tx_bytes_total", "Bytes the worker sent.", |w| w.tx_bytes),
        ];
        for (name, help, get) in worker_counters {
            let mut f = counter_family(&mut enc, name, help)?;
            for w in &s.workers {
                counter(&mut f, &[("worker", w.worker.to_string()), ("core", w.core.to_string())], get(w))?;
            }
        }
        let mut f = counter_family(&mut enc, "podswitch_worker_drops_total", "Frames the worker dropped, by reason.")?;
        for w in &s.workers {
            let id = w.worker.to_string();
            for (reason, n) in &w.drops {
                counter(&mut f, &[("worker", id.as_str()), ("reason", reason.as_str())], *n)?;
            }
        }
        self.encode_worker_polls(&mut enc)?;
        let mut f = counter_family(&mut enc, "podswitch_drops_total", "Frames dropped, by reason (all workers).")?;
        for (reason, n) in &s.drops {
            counter(&mut f, &[("reason", reason.as_str())], *n)?;
        }
        let mut f = counter_family(
            &mut enc,
            "podswitch_pipeline_stage_total",
            "What the pipeline stages did besides dropping (answers sent, connections made, backends chosen), by stage counter (all workers).",
        )?;
        for (name, n) in &s.stages {
            counter(&mut f, &[("counter", name.as_str())], *n)?;
        }
        let gauges: [(&str, &str, u64); 6] = [
            ("podswitch_conntrack_entries", "Connections in the connection table.", s.conntrack.entries),
            ("podswitch_conntrack_capacity", "Connections the connection table holds at most.", s.conntrack.capacity),
            ("podswitch_routes", "Routes in the tables in force.", s.tables.routes),
            ("podswitch_service_frontends", "Service frontends (address, port, protocol) in the tables in force.", s.tables.frontends),
            ("podswitch_service_backends", "Service backends in the tables in force.", s.tables.backends),
            ("podswitch_policy_pods", "Pods selected by some NetworkPolicy in the tables in force.", s.tables.policy_pods),
        ];
        for (name, help, v) in gauges {
            ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        // Before the first apply these two families are declared without a sample.
        let mut f = enc.encode_descriptor(
            "podswitch_memory_bytes",
            "The agent's memory by table (estimated from what each holds): Kubernetes objects kept, Service frontends and backends, Maglev tables, policy, routes, connection table.",
            None,
            MetricType::Gauge,
        )?;
        for (table, bytes) in s.memory.iter().flat_map(crate::memory::MemoryByTable::by_table) {
            ConstGauge::new(bytes).encode(f.encode_family(&[("table", table)])?)?;
        }
        let f = enc.encode_descriptor("podswitch_resident_memory_bytes", "The agent's resident memory (VmRSS).", None, MetricType::Gauge)?;
        if let Some(r) = s.memory.as_ref().and_then(|m| m.resident_bytes) {
            ConstGauge::new(r).encode(f)?;
        }
        let f = counter_family(
            &mut enc,
            "podswitch_conntrack_insert_failures_total",
            "New connections refused: connection table full or no free slot.",
        )?;
        ConstCounter::new(s.conntrack.insert_failures).encode(f)?;
        // Before the first apply these two families are declared without a sample.
        let optional_gauges = [
            ("podswitch_sync_duration_seconds", "How long the last apply of the objects to the tables took.", s.sync.last_duration_seconds),
            (
                "podswitch_last_sync_timestamp_seconds",
                "When the objects were last applied to the tables (Unix time).",
                s.sync.last_timestamp_seconds,
            ),
        ];
        for (name, help, v) in optional_gauges {
            let f = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            if let Some(v) = v {
                ConstGauge::new(v).encode(f)?;
            }
        }
        let f = counter_family(&mut enc, "podswitch_syncs_total", "Object views applied to the tables.")?;
        ConstCounter::new(s.sync.syncs).encode(f)?;
        let mut f = counter_family(
            &mut enc,
            "podswitch_source_errors_total",
            "Errors of the object source: views not applied (manifests) and Kubernetes API errors (api).",
        )?;
        counter(&mut f, &[("source", "manifests")], s.sync.manifest_errors)?;
        counter(&mut f, &[("source", "api")], s.sync.api_errors)?;
        // Only the Kubernetes API source has this family.
        if let Some(c) = s.sync.api_connected {
            let f = enc.encode_descriptor(
                "podswitch_api_connected",
                "1 if the last request to the Kubernetes API got an answer.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(u64::from(c)).encode(f)?;
        }
        // Only with --l2-announce.
        if let Some(addrs) = &s.l2_announced {
            let mut f = enc.encode_descriptor(
                "podswitch_l2_announced",
                "1 if this node announces the address (answers ARP for it: it holds its Lease), 0 if it competes for it and does not.",
                None,
                MetricType::Gauge,
            )?;
            for (address, here) in addrs {
                ConstGauge::new(u64::from(*here)).encode(f.encode_family(&[("address", address.as_str())])?)?;
            }
        }
        Ok(())
    }
}

impl SnapshotCollector {
    /// The workers' time, rounds, burst sizes and wake-ups (`show workers`).
    fn encode_worker_polls(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let workers = &self.0.workers;
        let ids: Vec<(String, String)> = workers.iter().map(|w| (w.worker.to_string(), w.core.to_string())).collect();
        let mut f = counter_family(
            enc,
            "podswitch_worker_seconds_total",
            "Time the worker spent busy (rounds that moved frames), polling (empty rounds) and sleeping (core given back), by state.",
        )?;
        for (w, (id, core)) in workers.iter().zip(&ids) {
            for (state, ns) in [("busy", w.poll.busy_ns), ("polling", w.poll.polling_ns), ("sleeping", w.poll.sleeping_ns)] {
                let labels = [("worker", id.as_str()), ("core", core.as_str()), ("state", state)];
                ConstCounter::new(ns as f64 / 1e9).encode(f.encode_family(&labels)?)?;
            }
        }
        type PollField = fn(&PollTotals) -> u64;
        let rounds: [(&str, &str, PollField); 2] = [
            ("podswitch_worker_poll_rounds_total", "Rounds the worker made over its queues.", |p| p.rounds),
            ("podswitch_worker_rx_rounds_total", "Rounds in which the worker received at least one frame.", |p| p.rx_rounds),
        ];
        for (name, help, get) in rounds {
            let mut f = counter_family(enc, name, help)?;
            for (w, (id, core)) in workers.iter().zip(&ids) {
                counter(&mut f, &[("worker", id.as_str()), ("core", core.as_str())], get(&w.poll))?;
            }
        }
        let mut f = enc.encode_descriptor(
            "podswitch_worker_rx_burst_frames",
            "Frames per non-empty receive from one queue (count: receives, sum: frames).",
            None,
            MetricType::Histogram,
        )?;
        for (w, (id, core)) in workers.iter().zip(&ids) {
            let buckets: Vec<(f64, u64)> = BURST_BUCKET_BOUNDS
                .iter()
                .zip(w.poll.bursts)
                .map(|(&le, n)| (f64::from(le), n))
                .chain(std::iter::once((f64::INFINITY, 0)))
                .collect();
            f.encode_family(&[("worker", id.as_str()), ("core", core.as_str())])?.encode_histogram::<NoLabelSet>(
                w.poll.rx_packets as f64,
                w.poll.rx_bursts,
                &buckets,
                None,
            )?;
        }
        let mut f = counter_family(
            enc,
            "podswitch_worker_wakeups_total",
            "Sleeps of the worker that ended, by what ended them: frames on a socket (data), a command (doorbell), the timeout.",
        )?;
        for (w, (id, core)) in workers.iter().zip(&ids) {
            for (reason, n) in [("data", w.poll.woke_data), ("doorbell", w.poll.woke_doorbell), ("timeout", w.poll.woke_timeout)] {
                counter(&mut f, &[("worker", id.as_str()), ("core", core.as_str()), ("reason", reason)], n)?;
            }
        }
        Ok(())
    }
}

/// The snapshot in the Prometheus text format (version 0.0.4, [`CONTENT_TYPE`]).
pub fn render(s: &MetricsSnapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(s.clone())));
    let mut out = String::with_capacity(4096 + 600 * s.ports.len());
    prometheus_text::encode(&mut out, &registry).expect("writing to a String does not fail");
    out
}

/// The running endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A provider of snapshots; called once per scrape on the server's thread.
pub type Provider = Arc<dyn Fn() -> MetricsSnapshot + Send + Sync>;

/// Requests handled at once; beyond that new connections are closed unanswered.
const MAX_IN_FLIGHT: usize = 8;

/// Binds `addr` and serves `/metrics` on a thread of its own for the life of the process.
/// Each connection gets a short-lived thread, so a client that connects and says nothing
/// (it has 5 s) delays nobody.
pub fn serve(addr: SocketAddr, provider: Provider) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new().name("podswitch-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("metrics endpoint: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                continue; // dropping the stream closes it
            }
            let provider = Arc::clone(&provider);
            let in_flight2 = Arc::clone(&in_flight);
            let spawned = std::thread::Builder::new().name("podswitch-scrape".into()).spawn(move || {
                if let Err(e) = handle(stream, &provider) {
                    tracing::debug!("metrics request: {e}");
                }
                in_flight2.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                in_flight.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("metrics endpoint: cannot start a thread: {e}");
            }
        }
    })?;
    Ok(MetricsServer { addr, _thread: thread })
}

fn handle(mut stream: TcpStream, provider: &Provider) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        if buf.len() > 16 * 1024 {
            return respond(&mut stream, "431 Request Header Fields Too Large", "text/plain", b"request head too large\n", true);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "text/plain", b"not found: try /metrics\n", true);
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET /metrics\n", true);
    }
    let body = render(&provider());
    respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes(), method == "GET")
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8], with_body: bool) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            ports: vec![
                PortMetrics {
                    port: "host".into(),
                    interface: "psw-host".into(),
                    totals: PortTotals { rx_packets: 10, rx_bytes: 1000, ..Default::default() },
                    ..Default::default()
                },
                PortMetrics {
                    port: "x/a \"quoted\"\\back\nline".into(),
                    interface: "ps0123".into(),
                    totals: PortTotals { tx_packets: 3, ..Default::default() },
                    ..Default::default()
                },
            ],
            workers: vec![WorkerMetrics {
                worker: 0,
                core: 2,
                rx_packets: 13,
                drops: vec![("no_route".into(), 4), ("truncated".into(), 0)],
                poll: PollTotals {
                    rounds: 1000,
                    rx_rounds: 4,
                    rx_bursts: 5,
                    rx_packets: 13,
                    busy_ns: 1_500_000,
                    polling_ns: 250_000_000,
                    sleeping_ns: 2_000_000_000,
                    sleeps: 41,
                    woke_data: 3,
                    woke_doorbell: 1,
                    woke_timeout: 36,
                    bursts: [3, 1, 0, 1, 0, 0, 0],
                },
                ..Default::default()
            }],
            drops: vec![("no_route".into(), 4), ("truncated".into(), 0)],
            stages: vec![("arp.replies".into(), 2), ("reject.tcp_resets".into(), 1)],
            conntrack: ConntrackMetrics { entries: 5, capacity: 262_144, insert_failures: 1 },
            tables: TableSizes { routes: 12, frontends: 3, backends: 6, policy_pods: 2 },
            sync: SyncMetrics {
                last_duration_seconds: Some(0.0042),
                last_timestamp_seconds: Some(1_700_000_000.5),
                syncs: 7,
                manifest_errors: 1,
                api_errors: 2,
                api_connected: Some(true),
            },
            memory: Some(crate::memory::MemoryByTable {
                objects_bytes: 1000,
                services_bytes: 2000,
                maglev_bytes: 3000,
                policy_bytes: 400,
                routes_bytes: 500,
                conntrack_bytes: 60000,
                resident_bytes: Some(123_000),
                peak_resident_bytes: Some(456_000),
            }),
            l2_announced: Some(vec![("192.0.2.1".into(), true), ("192.0.2.2".into(), false)]),
        }
    }

    /// The exposition of [`snapshot`], byte for byte as podswitch wrote it before it used
    /// `prometheus-client`: names, label names, types and HELP texts are what dashboards and
    /// alerts query, so any change here is a change for users.
    const SCRAPE: &str = r#"# HELP podswitch_port_rx_packets_total Frames received from the port.
# TYPE podswitch_port_rx_packets_total counter
podswitch_port_rx_packets_total{port="host",interface="psw-host"} 10
podswitch_port_rx_packets_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_port_rx_bytes_total Bytes received from the port.
# TYPE podswitch_port_rx_bytes_total counter
podswitch_port_rx_bytes_total{port="host",interface="psw-host"} 1000
podswitch_port_rx_bytes_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_port_rx_dropped_total Frames received from the port and dropped.
# TYPE podswitch_port_rx_dropped_total counter
podswitch_port_rx_dropped_total{port="host",interface="psw-host"} 0
podswitch_port_rx_dropped_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_port_tx_packets_total Frames sent to the port.
# TYPE podswitch_port_tx_packets_total counter
podswitch_port_tx_packets_total{port="host",interface="psw-host"} 0
podswitch_port_tx_packets_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 3
# HELP podswitch_port_tx_bytes_total Bytes sent to the port.
# TYPE podswitch_port_tx_bytes_total counter
podswitch_port_tx_bytes_total{port="host",interface="psw-host"} 0
podswitch_port_tx_bytes_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_port_tx_dropped_total Frames for the port that could not be sent.
# TYPE podswitch_port_tx_dropped_total counter
podswitch_port_tx_dropped_total{port="host",interface="psw-host"} 0
podswitch_port_tx_dropped_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_port_kernel_lost_total Frames of the port the kernel dropped before the switch saw them (empty fill ring, full RX ring) or refused to send.
# TYPE podswitch_port_kernel_lost_total counter
podswitch_port_kernel_lost_total{port="host",interface="psw-host"} 0
podswitch_port_kernel_lost_total{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 0
# HELP podswitch_worker_rx_packets_total Frames the worker received.
# TYPE podswitch_worker_rx_packets_total counter
podswitch_worker_rx_packets_total{worker="0",core="2"} 13
# HELP podswitch_worker_rx_bytes_total Bytes the worker received.
# TYPE podswitch_worker_rx_bytes_total counter
podswitch_worker_rx_bytes_total{worker="0",core="2"} 0
# HELP podswitch_worker_tx_packets_total Frames the worker sent.
# TYPE podswitch_worker_tx_packets_total counter
podswitch_worker_tx_packets_total{worker="0",core="2"} 0
# HELP podswitch_worker_tx_bytes_total Bytes the worker sent.
# TYPE podswitch_worker_tx_bytes_total counter
podswitch_worker_tx_bytes_total{worker="0",core="2"} 0
# HELP podswitch_worker_drops_total Frames the worker dropped, by reason.
# TYPE podswitch_worker_drops_total counter
podswitch_worker_drops_total{worker="0",reason="no_route"} 4
podswitch_worker_drops_total{worker="0",reason="truncated"} 0
# HELP podswitch_worker_seconds_total Time the worker spent busy (rounds that moved frames), polling (empty rounds) and sleeping (core given back), by state.
# TYPE podswitch_worker_seconds_total counter
podswitch_worker_seconds_total{worker="0",core="2",state="busy"} 0.0015
podswitch_worker_seconds_total{worker="0",core="2",state="polling"} 0.25
podswitch_worker_seconds_total{worker="0",core="2",state="sleeping"} 2.0
# HELP podswitch_worker_poll_rounds_total Rounds the worker made over its queues.
# TYPE podswitch_worker_poll_rounds_total counter
podswitch_worker_poll_rounds_total{worker="0",core="2"} 1000
# HELP podswitch_worker_rx_rounds_total Rounds in which the worker received at least one frame.
# TYPE podswitch_worker_rx_rounds_total counter
podswitch_worker_rx_rounds_total{worker="0",core="2"} 4
# HELP podswitch_worker_rx_burst_frames Frames per non-empty receive from one queue (count: receives, sum: frames).
# TYPE podswitch_worker_rx_burst_frames histogram
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="1"} 3
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="2"} 4
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="4"} 4
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="8"} 5
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="16"} 5
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="32"} 5
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="64"} 5
podswitch_worker_rx_burst_frames_bucket{worker="0",core="2",le="+Inf"} 5
podswitch_worker_rx_burst_frames_sum{worker="0",core="2"} 13.0
podswitch_worker_rx_burst_frames_count{worker="0",core="2"} 5
# HELP podswitch_worker_wakeups_total Sleeps of the worker that ended, by what ended them: frames on a socket (data), a command (doorbell), the timeout.
# TYPE podswitch_worker_wakeups_total counter
podswitch_worker_wakeups_total{worker="0",core="2",reason="data"} 3
podswitch_worker_wakeups_total{worker="0",core="2",reason="doorbell"} 1
podswitch_worker_wakeups_total{worker="0",core="2",reason="timeout"} 36
# HELP podswitch_drops_total Frames dropped, by reason (all workers).
# TYPE podswitch_drops_total counter
podswitch_drops_total{reason="no_route"} 4
podswitch_drops_total{reason="truncated"} 0
# HELP podswitch_pipeline_stage_total What the pipeline stages did besides dropping (answers sent, connections made, backends chosen), by stage counter (all workers).
# TYPE podswitch_pipeline_stage_total counter
podswitch_pipeline_stage_total{counter="arp.replies"} 2
podswitch_pipeline_stage_total{counter="reject.tcp_resets"} 1
# HELP podswitch_conntrack_entries Connections in the connection table.
# TYPE podswitch_conntrack_entries gauge
podswitch_conntrack_entries 5
# HELP podswitch_conntrack_capacity Connections the connection table holds at most.
# TYPE podswitch_conntrack_capacity gauge
podswitch_conntrack_capacity 262144
# HELP podswitch_routes Routes in the tables in force.
# TYPE podswitch_routes gauge
podswitch_routes 12
# HELP podswitch_service_frontends Service frontends (address, port, protocol) in the tables in force.
# TYPE podswitch_service_frontends gauge
podswitch_service_frontends 3
# HELP podswitch_service_backends Service backends in the tables in force.
# TYPE podswitch_service_backends gauge
podswitch_service_backends 6
# HELP podswitch_policy_pods Pods selected by some NetworkPolicy in the tables in force.
# TYPE podswitch_policy_pods gauge
podswitch_policy_pods 2
# HELP podswitch_memory_bytes The agent's memory by table (estimated from what each holds): Kubernetes objects kept, Service frontends and backends, Maglev tables, policy, routes, connection table.
# TYPE podswitch_memory_bytes gauge
podswitch_memory_bytes{table="objects"} 1000
podswitch_memory_bytes{table="services"} 2000
podswitch_memory_bytes{table="maglev"} 3000
podswitch_memory_bytes{table="policy"} 400
podswitch_memory_bytes{table="routes"} 500
podswitch_memory_bytes{table="conntrack"} 60000
# HELP podswitch_resident_memory_bytes The agent's resident memory (VmRSS).
# TYPE podswitch_resident_memory_bytes gauge
podswitch_resident_memory_bytes 123000
# HELP podswitch_conntrack_insert_failures_total New connections refused: connection table full or no free slot.
# TYPE podswitch_conntrack_insert_failures_total counter
podswitch_conntrack_insert_failures_total 1
# HELP podswitch_sync_duration_seconds How long the last apply of the objects to the tables took.
# TYPE podswitch_sync_duration_seconds gauge
podswitch_sync_duration_seconds 0.0042
# HELP podswitch_last_sync_timestamp_seconds When the objects were last applied to the tables (Unix time).
# TYPE podswitch_last_sync_timestamp_seconds gauge
podswitch_last_sync_timestamp_seconds 1700000000.5
# HELP podswitch_syncs_total Object views applied to the tables.
# TYPE podswitch_syncs_total counter
podswitch_syncs_total 7
# HELP podswitch_source_errors_total Errors of the object source: views not applied (manifests) and Kubernetes API errors (api).
# TYPE podswitch_source_errors_total counter
podswitch_source_errors_total{source="manifests"} 1
podswitch_source_errors_total{source="api"} 2
# HELP podswitch_api_connected 1 if the last request to the Kubernetes API got an answer.
# TYPE podswitch_api_connected gauge
podswitch_api_connected 1
# HELP podswitch_l2_announced 1 if this node announces the address (answers ARP for it: it holds its Lease), 0 if it competes for it and does not.
# TYPE podswitch_l2_announced gauge
podswitch_l2_announced{address="192.0.2.1"} 1
podswitch_l2_announced{address="192.0.2.2"} 0
"#;

    #[test]
    fn rendering_is_the_documented_exposition() {
        let text = render(&snapshot());
        assert_eq!(text, SCRAPE, "got:\n{text}");
        // The awkward port name comes out escaped (backslash, quote, newline).
        assert!(text.contains(r#"{port="x/a \"quoted\"\\back\nline",interface="ps0123"} 3"#));
        // Before the first apply, with the directory source: the sync gauges have no sample
        // and there is no API family.
        let empty = render(&MetricsSnapshot::default());
        assert!(empty.contains("# TYPE podswitch_sync_duration_seconds gauge\n# HELP podswitch_last_sync"), "{empty}");
        assert!(!empty.lines().any(|l| l.starts_with("podswitch_sync_duration_seconds")), "{empty}");
        assert!(!empty.lines().any(|l| l.starts_with("podswitch_last_sync_timestamp_seconds")), "{empty}");
        assert!(!empty.contains("podswitch_api_connected"), "{empty}");
        assert!(!empty.contains("podswitch_l2_announced"), "{empty}");
        assert!(empty.contains("podswitch_source_errors_total{source=\"api\"} 0\n"), "{empty}");
        assert!(empty.contains("# TYPE podswitch_memory_bytes gauge\n# HELP podswitch_resident_memory_bytes"), "{empty}");
        assert!(!empty.lines().any(|l| l.starts_with("podswitch_memory_bytes") || l.starts_with("podswitch_resident_memory_bytes")), "{empty}");
    }

    /// `promtool` (from Debian's `prometheus`), found on PATH or installed by
    /// `scripts/lib/deps.sh` when root; None (after printing SKIPPED) otherwise.
    fn promtool(test: &str) -> Option<&'static str> {
        let found = || Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
        if !found() && nix::unistd::geteuid().is_root() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/lib/deps.sh");
            let _ = Command::new("bash").args(["-c", &format!("source {script} && podswitch_install_promtool")]).status();
        }
        if found() {
            Some("promtool")
        } else {
            eprintln!("SKIPPED (needs promtool; run as root or install Debian's prometheus): {test}");
            None
        }
    }

    /// `promtool check metrics` on `text`: None if it accepts it, else its complaints.
    fn promtool_complaints(promtool: &str, text: &str) -> Option<String> {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (!out.status.success()).then(|| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let Some(promtool) = promtool("promtool_accepts_the_exposition") else { return };
        assert_eq!(promtool_complaints(promtool, &render(&snapshot())), None);
        assert_eq!(promtool_complaints(promtool, &render(&MetricsSnapshot::default())), None);
        // And it is a checker that complains: a counter without `_total`, an unterminated label.
        assert!(promtool_complaints(promtool, "# HELP a x\n# TYPE a counter\na 1\n").is_some_and(|c| c.contains("_total")));
        assert!(promtool_complaints(promtool, "a{l=\"x\"y\"} 1\n").is_some());
    }

    #[test]
    fn metrics_addr_parses() {
        assert_eq!("off".parse::<MetricsAddr>(), Ok(MetricsAddr::Off));
        assert_eq!("127.0.0.1:9090".parse::<MetricsAddr>(), Ok(MetricsAddr::At("127.0.0.1:9090".parse().unwrap())));
        assert_eq!("[::1]:9090".parse::<MetricsAddr>().unwrap().to_string(), "[::1]:9090");
        assert!("9090".parse::<MetricsAddr>().is_err());
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            m: MetricsArgs,
        }
        assert_eq!(Cli::parse_from(["x"]).m.metrics_addr, MetricsAddr::At("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(Cli::parse_from(["x", "--metrics-addr", "off"]).m.metrics_addr, MetricsAddr::Off);
        assert!(Cli::try_parse_from(["x", "--metrics-addr", "nope"]).is_err());
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_over_http_on_loopback() {
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = Arc::clone(&calls);
        let provider: Provider = Arc::new(move || {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            snapshot()
        });
        let srv = serve("127.0.0.1:0".parse().unwrap(), provider).unwrap();
        let addr = srv.local_addr();
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        let body = r.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, SCRAPE);
        let len: usize = r.lines().find_map(|l| l.strip_prefix("Content-Length: ")).unwrap().trim().parse().unwrap();
        assert_eq!(len, body.len());
        assert!(get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "GET /metricsx HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        let head = get(addr, "HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");
        // A client that connects and says nothing does not block the next one for long.
        let idle = TcpStream::connect(addr).unwrap();
        let t = std::time::Instant::now();
        assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        drop(idle);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 4);
    }
}
