//! The Prometheus endpoint: `GET /metrics` on `--metrics-addr` (default 127.0.0.1:9090, `off`
//! disables it), in the text exposition format (version 0.0.4).
//!
//! Contract:
//! - The switch hands [`serve`] a provider that returns a [`MetricsSnapshot`]; every scrape
//!   calls it once and renders it with [`render`]. Nothing is cached between scrapes.
//! - One request per connection, each on a short-lived thread (at most 8 at once); a client
//!   gets 5 s to send its request. `GET`/`HEAD /metrics` answer
//!   200, any other path 404, any other method 405.
//! - Names follow Prometheus conventions: `podswitch_` prefix, `_total` for counters, base units
//!   (`_bytes`, `_seconds`); every family has HELP and TYPE lines, label values are escaped.
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// `--metrics-addr`: an address to listen on, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    Off,
    At(SocketAddr),
}

impl FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddr::Off);
        }
        s.parse::<SocketAddr>()
            .map(MetricsAddr::At)
            .map_err(|_| format!("{s:?} is not an address:port (e.g. 127.0.0.1:9090) nor `off`"))
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
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
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
    pub conntrack: ConntrackMetrics,
    pub tables: TableSizes,
    pub sync: SyncMetrics,
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

/// Label values escape backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float as the exposition format writes it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// The snapshot in the Prometheus text format.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096 + 600 * s.ports.len());
    type PortField = fn(&PortMetrics) -> u64;
    let port_counters: [(&str, &str, PortField); 7] = [
        ("podswitch_port_rx_packets_total", "Frames received from the port.", |p| p.rx_packets),
        ("podswitch_port_rx_bytes_total", "Bytes received from the port.", |p| p.rx_bytes),
        ("podswitch_port_rx_dropped_total", "Frames received from the port and dropped.", |p| p.rx_dropped),
        ("podswitch_port_tx_packets_total", "Frames sent to the port.", |p| p.tx_packets),
        ("podswitch_port_tx_bytes_total", "Bytes sent to the port.", |p| p.tx_bytes),
        ("podswitch_port_tx_dropped_total", "Frames for the port that could not be sent.", |p| p.tx_dropped),
        (
            "podswitch_port_kernel_lost_total",
            "Frames of the port the kernel dropped before the switch saw them (empty fill ring, full RX ring) or refused to send.",
            |p| p.kernel_lost,
        ),
    ];
    for (name, help, get) in port_counters {
        let mut f = family(&mut out, name, "counter", help);
        for p in &s.ports {
            f.sample(name, &[("port", &p.port), ("interface", &p.interface)], get(p));
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
        let mut f = family(&mut out, name, "counter", help);
        for w in &s.workers {
            let (id, core) = (w.worker.to_string(), w.core.to_string());
            f.sample(name, &[("worker", &id), ("core", &core)], get(w));
        }
    }
    {
        let name = "podswitch_worker_drops_total";
        let mut f = family(&mut out, name, "counter", "Frames the worker dropped, by reason.");
        for w in &s.workers {
            let id = w.worker.to_string();
            for (reason, n) in &w.drops {
                f.sample(name, &[("worker", &id), ("reason", reason)], n);
            }
        }
    }
    {
        let name = "podswitch_drops_total";
        let mut f = family(&mut out, name, "counter", "Frames dropped, by reason (all workers).");
        for (reason, n) in &s.drops {
            f.sample(name, &[("reason", reason)], n);
        }
    }
    let gauges: [(&str, &str, &str, u64); 6] = [
        ("podswitch_conntrack_entries", "gauge", "Connections in the connection table.", s.conntrack.entries),
        ("podswitch_conntrack_capacity", "gauge", "Connections the connection table holds at most.", s.conntrack.capacity),
        ("podswitch_routes", "gauge", "Routes in the tables in force.", s.tables.routes),
        ("podswitch_service_frontends", "gauge", "Service frontends (address, port, protocol) in the tables in force.", s.tables.frontends),
        ("podswitch_service_backends", "gauge", "Service backends in the tables in force.", s.tables.backends),
        ("podswitch_policy_pods", "gauge", "Pods selected by some NetworkPolicy in the tables in force.", s.tables.policy_pods),
    ];
    for (name, kind, help, v) in gauges {
        family(&mut out, name, kind, help).sample(name, &[], v);
    }
    family(&mut out, "podswitch_conntrack_insert_failures_total", "counter", "New connections refused: connection table full or no free slot.")
        .sample("podswitch_conntrack_insert_failures_total", &[], s.conntrack.insert_failures);
    {
        let name = "podswitch_sync_duration_seconds";
        let mut f = family(&mut out, name, "gauge", "How long the last apply of the objects to the tables took.");
        if let Some(v) = s.sync.last_duration_seconds {
            f.sample(name, &[], float(v));
        }
    }
    {
        let name = "podswitch_last_sync_timestamp_seconds";
        let mut f = family(&mut out, name, "gauge", "When the objects were last applied to the tables (Unix time).");
        if let Some(v) = s.sync.last_timestamp_seconds {
            f.sample(name, &[], float(v));
        }
    }
    family(&mut out, "podswitch_syncs_total", "counter", "Object views applied to the tables.").sample("podswitch_syncs_total", &[], s.sync.syncs);
    {
        let name = "podswitch_source_errors_total";
        family(&mut out, name, "counter", "Errors of the object source: views not applied (manifests) and Kubernetes API errors (api).")
            .sample(name, &[("source", "manifests")], s.sync.manifest_errors)
            .sample(name, &[("source", "api")], s.sync.api_errors);
    }
    if let Some(c) = s.sync.api_connected {
        let name = "podswitch_api_connected";
        family(&mut out, name, "gauge", "1 if the last request to the Kubernetes API got an answer.").sample(name, &[], u8::from(c));
    }
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
    respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body.as_bytes(), method == "GET")
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
    use std::collections::BTreeMap;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            ports: vec![
                PortMetrics { port: "host".into(), interface: "psw-host".into(), rx_packets: 10, rx_bytes: 1000, ..Default::default() },
                PortMetrics { port: "x/a \"quoted\"\\back\nline".into(), interface: "ps0123".into(), tx_packets: 3, ..Default::default() },
            ],
            workers: vec![WorkerMetrics {
                worker: 0,
                core: 2,
                rx_packets: 13,
                drops: vec![("no_route".into(), 4), ("truncated".into(), 0)],
                ..Default::default()
            }],
            drops: vec![("no_route".into(), 4), ("truncated".into(), 0)],
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
        }
    }

    fn valid_name(n: &str) -> bool {
        let mut cs = n.chars();
        cs.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// Parses `{k="v",...}`; returns the labels with unescaped values, or why not.
    fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        let b: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i] != '=' {
                i += 1;
            }
            let key: String = b[start..i].iter().collect();
            let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(format!("bad label name {key:?}"));
            }
            if b.get(i + 1) != Some(&'"') {
                return Err(format!("label {key} value not quoted"));
            }
            i += 2;
            let mut v = String::new();
            loop {
                match b.get(i) {
                    None => return Err(format!("label {key} value not terminated")),
                    Some('"') => break,
                    Some('\n') => return Err("raw newline in label value".into()),
                    Some('\\') => {
                        match b.get(i + 1) {
                            Some('\\') => v.push('\\'),
                            Some('"') => v.push('"'),
                            Some('n') => v.push('\n'),
                            other => return Err(format!("bad escape \\{other:?}")),
                        }
                        i += 2;
                        continue;
                    }
                    Some(c) => v.push(*c),
                }
                i += 1;
            }
            i += 1; // closing quote
            out.push((key, v));
            match b.get(i) {
                None => break,
                Some(',') => i += 1,
                Some(c) => return Err(format!("unexpected {c:?} after a label value")),
            }
        }
        Ok(out)
    }

    type Labels = Vec<(String, String)>;
    type Samples = BTreeMap<String, Vec<(Labels, f64)>>;

    /// A checker of the text format: HELP/TYPE before samples, one TYPE per family, valid
    /// names and labels, numeric values, every sample of a declared family, no duplicates.
    fn check(text: &str) -> Result<Samples, String> {
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut helped = std::collections::BTreeSet::new();
        let mut samples: Samples = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        if !text.ends_with('\n') {
            return Err("output does not end with a newline".into());
        }
        for (no, line) in text.lines().enumerate() {
            let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                if !valid_name(name) || !helped.insert(name.to_string()) {
                    return Err(err("bad or repeated HELP".into()));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut p = rest.split(' ');
                let (name, kind) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
                if !valid_name(name) || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(err("bad TYPE".into()));
                }
                if types.insert(name.to_string(), kind.to_string()).is_some() {
                    return Err(err("repeated TYPE".into()));
                }
                if samples.contains_key(name) {
                    return Err(err("TYPE after samples".into()));
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| err("no value".into()))?;
            let value: f64 = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| err("value is not a number".into()))?,
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let inner = rest.strip_suffix('}').ok_or_else(|| err("labels not closed".into()))?;
                    (n, parse_labels(inner).map_err(err)?)
                }
                None => (series, Vec::new()),
            };
            if !valid_name(name) {
                return Err(err("bad metric name".into()));
            }
            let kind = types.get(name).ok_or_else(|| err("sample of an undeclared metric".into()))?;
            if !helped.contains(name) {
                return Err(err("no HELP".into()));
            }
            if kind == "counter" && !name.ends_with("_total") {
                return Err(err("counter without _total".into()));
            }
            if !seen.insert(series.to_string()) {
                return Err(err("duplicate series".into()));
            }
            samples.entry(name.to_string()).or_default().push((labels, value));
        }
        Ok(samples)
    }

    #[test]
    fn rendering_passes_the_format_checker() {
        let text = render(&snapshot());
        let samples = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let rx = &samples["podswitch_port_rx_packets_total"];
        assert_eq!(rx.len(), 2);
        assert_eq!(rx[0].1, 10.0);
        // The awkward label value comes back intact after unescaping.
        assert_eq!(rx[1].0[0], ("port".to_string(), "x/a \"quoted\"\\back\nline".to_string()));
        assert_eq!(samples["podswitch_drops_total"][0], (vec![("reason".into(), "no_route".into())], 4.0));
        assert_eq!(samples["podswitch_conntrack_entries"][0].1, 5.0);
        assert_eq!(samples["podswitch_conntrack_capacity"][0].1, 262_144.0);
        assert_eq!(samples["podswitch_sync_duration_seconds"][0].1, 0.0042);
        assert_eq!(samples["podswitch_last_sync_timestamp_seconds"][0].1, 1_700_000_000.5);
        assert_eq!(samples["podswitch_worker_drops_total"].len(), 2);
        assert_eq!(samples["podswitch_source_errors_total"].len(), 2);
        assert_eq!(samples["podswitch_api_connected"][0].1, 1.0);
        assert!(text.contains("# TYPE podswitch_conntrack_entries gauge\n"));
        assert!(text.contains("# TYPE podswitch_drops_total counter\n"));
        // An empty snapshot (no sync yet, directory source) is valid too.
        let text = render(&MetricsSnapshot::default());
        let samples = check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!samples.contains_key("podswitch_sync_duration_seconds"));
        assert!(!text.contains("podswitch_api_connected"));
    }

    #[test]
    fn the_checker_catches_mistakes() {
        assert!(check("# HELP a_total x\n# TYPE a_total counter\na_total 1\n").is_ok());
        assert!(check("a 1\n").unwrap_err().contains("undeclared"));
        assert!(check("# HELP a x\n# TYPE a gauge\na{l=\"x\"y\"} 1\n").is_err());
        assert!(check("# HELP a x\n# TYPE a gauge\na{l=\"x\\q\"} 1\n").is_err());
        assert!(check("# HELP 1a x\n# TYPE 1a gauge\n1a 1\n").is_err());
        assert!(check("# HELP a x\n# TYPE a gauge\na one\n").is_err());
        assert!(check("# HELP a x\n# TYPE a counter\na 1\n").unwrap_err().contains("_total"));
        assert!(check("# HELP a x\n# TYPE a gauge\na 1\na 2\n").unwrap_err().contains("duplicate"));
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
        check(body).unwrap();
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
