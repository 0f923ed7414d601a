//! Integration tests of NetworkPolicy through `podswitch lab`: full reachability matrices of
//! the 9-pod model (namespaces x, y, z; pods a, b, c; TCP and UDP on 80 and 81) by pod IP and
//! through Services, with policies, pod labels and namespace labels edited while the lab runs.
//!
//! Contract:
//! - They need root (they create network namespaces); otherwise each prints
//!   `SKIPPED: <test> needs root` to stderr and passes, or fails when `CI` is set
//!   ([`labkit::root_or_skip`]).
//! - One lab per machine: every test holds a [`labkit::Hold`] (the in-process mutex and an
//!   exclusive `flock` on `labkit::MACHINE_LOCK`, which the other lab test binaries take too)
//!   for as long as its lab is up, starts with `lab down` (a lab left over is removed) and tears
//!   its lab down when the hold drops, also when it fails.
//! - Each test brings up one lab on a copy of `examples/lab-9pods` plus `services.yaml`: one
//!   ClusterIP Service per pod, named like the pod, in its namespace, selecting `pod: NAME`
//!   (exactly that pod), ClusterIP `10.96.100.N`, on 80 and 81 (TCP and UDP, targetPort the
//!   same number), on 8080 and 8081 (TCP and UDP, targetPort the pod's port 80 or 81 by name)
//!   and on 9090 (TCP and UDP). Scenarios then edit the manifest directory of the running lab
//!   (policies from `examples/policies`, pod and namespace labels); `lab probe` waits until
//!   the lab and the switch have applied the edit.
//! - A matrix is one `lab probe --json --timeout-ms 500` from every pod to every pod on TCP/80,
//!   TCP/81, UDP/80 and UDP/81: by pod IP, through the pod's Service on the same port, and
//!   through the Service on port 8000 + PORT (a named targetPort). Its 72 ordered pairs of
//!   distinct pods × 4 ports × 3 ways are compared with the scenario's expectation (a function
//!   of source, destination, port and protocol, which mirrors the comment of the example):
//!   allowed = `connected`, answered by the target pod, which saw the probe's own address
//!   (pod → ClusterIP is not masqueraded); denied = `timeout` (dropped without an answer: a
//!   `refused` is a failure). Policy is judged on the translated destination (address and
//!   port), so both Service matrices must equal the pod-IP matrix. A mismatch prints expected
//!   and observed grids (rows: from, columns: to) and the differing probes.
//! - Established connections are the test's own sockets, made inside the pods' namespaces
//!   (a server on port 9090, which no containerPort declares); "cut" means that a byte sent
//!   each way one second after the change is in force arrives at neither end.
//! - The verdict log (`show flows --json`) is checked record by record: the probe's source,
//!   protocol and destination as sent find its records.
//! - Tests collect every failure of a run (each differing matrix, each missing record) and fail
//!   at the end with all of them.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

mod labkit;
use labkit::{examples, ok, pod_ips, probe, Hold};

/// How long a matrix probe waits: denied probes all take this long, at once.
const MATRIX_TIMEOUT_MS: &str = "500";

const DENY_INGRESS: &str = "01-default-deny-ingress.yaml";
const ALLOW_SAME_NS: &str = "02-allow-same-namespace.yaml";

// ---- The 9-pod model ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pod {
    ns: &'static str,
    name: &'static str,
}

impl Pod {
    fn key(self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn is(self, key: &str) -> bool {
        key.split_once('/') == Some((self.ns, self.name))
    }

    /// The pod's network namespace in the lab.
    fn netns(self) -> String {
        format!("psl_{}_{}", self.ns, self.name)
    }

    /// The ClusterIP of the pod's own Service.
    fn cluster_ip(self) -> String {
        let i = PODS.iter().position(|p| *p == self).expect("a pod of the model");
        format!("10.96.100.{}", i + 1)
    }
}

const fn p(ns: &'static str, name: &'static str) -> Pod {
    Pod { ns, name }
}

const PODS: [Pod; 9] = [
    p("x", "a"),
    p("x", "b"),
    p("x", "c"),
    p("y", "a"),
    p("y", "b"),
    p("y", "c"),
    p("z", "a"),
    p("z", "b"),
    p("z", "c"),
];

fn pod(key: &str) -> Pod {
    *PODS.iter().find(|p| p.is(key)).unwrap_or_else(|| panic!("{key} is not a pod of the model"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

const PORTS: [(u16, Proto); 4] = [(80, Proto::Tcp), (81, Proto::Tcp), (80, Proto::Udp), (81, Proto::Udp)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    PodIp,
    /// The pod's Service on the pod's port (80 -> 80).
    Service,
    /// The pod's Service on port 8000 + the pod's port, whose targetPort is the pod's port by
    /// name (8080 -> serve-80-tcp): policy must judge the translated port too.
    ServiceNamedPort,
}

const VIAS: [Via; 3] = [Via::PodIp, Via::Service, Via::ServiceNamedPort];

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::PodIp => "by pod IP",
            Via::Service => "through the Service",
            Via::ServiceNamedPort => "through the Service on port 8000+PORT (targetPort by name)",
        }
    }

    /// The port the client addresses for the pod's `port`.
    fn port(self, port: u16) -> u16 {
        match self {
            Via::PodIp | Via::Service => port,
            Via::ServiceNamedPort => 8000 + port,
        }
    }
}

/// One probe of a matrix: a connection attempt the scenario allows or denies.
#[derive(Debug, Clone, Copy)]
struct Conn {
    from: Pod,
    to: Pod,
    port: u16,
    proto: Proto,
}

impl Conn {
    fn tcp(&self, port: u16) -> bool {
        self.proto == Proto::Tcp && self.port == port
    }

    fn udp(&self, port: u16) -> bool {
        self.proto == Proto::Udp && self.port == port
    }
}

type Expect<'a> = &'a dyn Fn(&Conn) -> bool;
/// An example file of `examples/policies` and the reachability it gives.
type Scenario = (&'static str, fn(&Conn) -> bool);

fn everything(_: &Conn) -> bool {
    true
}

/// 01: nothing reaches namespace x.
fn x_isolated(c: &Conn) -> bool {
    c.to.ns != "x"
}

/// 02: pods of x accept pods of x only.
fn x_accepts_x(c: &Conn) -> bool {
    c.to.ns != "x" || c.from.ns == "x"
}

/// The scenarios of `examples/policies`, each file applied alone, with the reachability its
/// comment states.
fn example_scenarios() -> Vec<Scenario> {
    vec![
        (DENY_INGRESS, x_isolated),
        (ALLOW_SAME_NS, x_accepts_x),
        ("03-allow-from-namespace-y.yaml", |c| !c.to.is("x/a") || c.from.ns == "y"),
        ("04-and-pod-b-of-other-namespaces.yaml", |c| !c.to.is("x/a") || (c.from.name == "b" && c.from.ns != "x")),
        ("05-or-other-namespaces-or-pod-b.yaml", |c| !c.to.is("x/a") || c.from.ns != "x" || c.from.name == "b"),
        // x/a's egress: 10.244.0.0/16 except x/b's address (every pod is in the /16).
        ("06-egress-ip-block-except.yaml", |c| !(c.from.is("x/a") && c.to.is("x/b"))),
        ("07-named-port-ingress.yaml", |c| c.to.ns != "x" || c.tcp(81)),
        ("08-named-port-egress.yaml", |c| c.from.ns != "x" || c.tcp(80) || c.udp(81)),
        ("09-end-port-range.yaml", |c| !c.to.is("x/a") || !c.udp(80)),
        ("10-default-deny-egress.yaml", |c| c.from.ns != "x"),
        ("11-egress-to-one-pod.yaml", |c| !c.from.is("x/a") || c.to.is("y/a")),
        ("12-policy-types-omitted-with-egress.yaml", |c| !c.to.is("x/a") && (!c.from.is("x/a") || c.to.is("x/b"))),
        ("13-policies-add-up.yaml", |c| {
            !c.to.is("x/a") || (c.from.ns == "y" && (c.tcp(80) || c.tcp(81))) || (c.from.ns == "z" && c.udp(80))
        }),
        ("14-empty-list-vs-empty-rule.yaml", everything),
    ]
}

/// Every Service of `services.yaml`: one per pod, selecting exactly that pod.
fn services_yaml() -> String {
    let mut y = String::from("# One ClusterIP Service per pod, named like the pod, selecting exactly it.\n");
    for p in PODS {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  clusterIP: {ip}\n  \
             selector: {{pod: {name}}}\n  ports:\n  \
             - {{name: tcp-80, port: 80, targetPort: 80, protocol: TCP}}\n  \
             - {{name: tcp-81, port: 81, targetPort: 81, protocol: TCP}}\n  \
             - {{name: udp-80, port: 80, targetPort: 80, protocol: UDP}}\n  \
             - {{name: udp-81, port: 81, targetPort: 81, protocol: UDP}}\n  \
             - {{name: tcp-8080, port: 8080, targetPort: serve-80-tcp, protocol: TCP}}\n  \
             - {{name: tcp-8081, port: 8081, targetPort: serve-81-tcp, protocol: TCP}}\n  \
             - {{name: udp-8080, port: 8080, targetPort: serve-80-udp, protocol: UDP}}\n  \
             - {{name: udp-8081, port: 8081, targetPort: serve-81-udp, protocol: UDP}}\n  \
             - {{name: tcp-9090, port: 9090, targetPort: 9090, protocol: TCP}}\n  \
             - {{name: udp-9090, port: 9090, targetPort: 9090, protocol: UDP}}\n---\n",
            name = p.name,
            ns = p.ns,
            ip = p.cluster_ip()
        );
    }
    y
}

// ---- The lab ----

/// A test's hold on the machine's one lab ([`labkit::Hold`]), up with its switch, and its pods' IPs.
struct Lab {
    hold: Hold,
    ips: BTreeMap<String, String>,
}

impl std::ops::Deref for Lab {
    type Target = Hold;
    fn deref(&self) -> &Hold {
        &self.hold
    }
}

impl Lab {
    /// None (after printing SKIPPED) unless root; otherwise the lab is up with its switch on
    /// `examples/lab-9pods` plus the Services.
    fn up(test: &str) -> Option<Lab> {
        let hold = Hold::new("policy", test, "lab-9pods")?;
        hold.write("services.yaml", &services_yaml());
        let t = Instant::now();
        ok(&["lab", "up", "--manifests", hold.dir()]);
        eprintln!("{test}: lab up in {:.1} s", t.elapsed().as_secs_f64());
        let ips = pod_ips();
        assert_eq!(ips.len(), 9, "{ips:?}");
        Some(Lab { hold, ips })
    }

    fn ip(&self, p: Pod) -> &str {
        &self.ips[&p.key()]
    }

    fn remove(&self, name: &str) {
        fs::remove_file(self.dir.join(name)).unwrap_or_else(|e| panic!("remove {name}: {e}"));
    }

    /// Copies `examples/policies/FILE` into the manifest directory.
    fn apply_example(&self, file: &str) {
        self.write(file, &fs::read_to_string(examples("policies").join(file)).unwrap());
    }

    /// Sets the labels of pod `ns/name` (in `pods-NS.yaml`) to `pod: NAME` plus `extra`.
    fn set_pod_labels(&self, ns: &str, name: &str, extra: &[&str]) {
        let mut labels = vec![format!("pod: {name}")];
        labels.extend(extra.iter().map(std::string::ToString::to_string));
        self.replace_labels(
            &format!("pods-{ns}.yaml"),
            &format!("  name: {name}\n  namespace: {ns}\n  labels:\n"),
            &labels,
        );
    }

    /// Sets the labels of Namespace `ns` (in `namespaces.yaml`) to `ns: NS` plus `extra`.
    fn set_namespace_labels(&self, ns: &str, extra: &[&str]) {
        let mut labels = vec![format!("ns: {ns}")];
        labels.extend(extra.iter().map(std::string::ToString::to_string));
        self.replace_labels("namespaces.yaml", &format!("  name: {ns}\n  labels:\n"), &labels);
    }
}

/// Returns once the lab and its switch have applied the manifest directory (`lab probe` waits
/// for that; a pod reaching its own IP does not cross the switch).
fn wait_applied() {
    probe(&["--from", "x/a", "--to", "pod/x/a:80", "--timeout-ms", "200"]);
}

fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

// ---- Matrices ----

/// One probe of a matrix and what came back.
struct Probe {
    via: Via,
    conn: Conn,
    result: Value,
}

impl Probe {
    fn target(&self) -> String {
        let kind = match self.via {
            Via::PodIp => "pod",
            Via::Service | Via::ServiceNamedPort => "svc",
        };
        format!("{kind}/{}:{}/{}", self.conn.to.key(), self.via.port(self.conn.port), self.conn.proto.lower())
    }

    /// `X` connected to the target pod, which saw the probe's address; `?` connected but
    /// answered by another pod or seeing another client; `R` refused; `.` timeout.
    fn cell(&self, lab: &Lab) -> char {
        let r = &self.result;
        match r["result"].as_str() {
            Some("connected") => {
                let source = r["source"].as_str().unwrap_or("");
                // The server must see the probe's address; its port may differ when the
                // switch gave the connection another source port because its reply tuple
                // clashed with a tracked connection's (a Service and a direct probe from one
                // pod may share a source port; netfilter's NAT does the same).
                let good = r["answered_by"] == self.conn.to.key().as_str()
                    && r["seen_client"].as_str().map(host) == Some(host(source))
                    && host(source) == lab.ip(self.conn.from);
                if good {
                    'X'
                } else {
                    '?'
                }
            }
            Some("refused") => 'R',
            Some("timeout") => '.',
            _ => '!',
        }
    }
}

/// Probes the whole matrix in one `lab probe` call; returns the probes between distinct pods.
fn probe_matrix() -> Vec<Probe> {
    let mut targets = BTreeMap::new();
    for to in PODS {
        for (port, proto) in PORTS {
            for via in VIAS {
                let pr = Probe { via, conn: Conn { from: to, to, port, proto }, result: Value::Null };
                targets.insert(pr.target(), (via, to, port, proto));
            }
        }
    }
    let mut args = vec!["--timeout-ms", MATRIX_TIMEOUT_MS, "--to"];
    args.extend(targets.keys().map(String::as_str));
    let results = probe(&args);
    assert_eq!(results.len(), PODS.len() * targets.len(), "one result per (pod, target)");
    results
        .into_iter()
        .filter_map(|r| {
            let from = pod(r["from"].as_str().unwrap());
            let (via, to, port, proto) = targets[r["to"].as_str().unwrap()];
            (from != to).then_some(Probe { via, conn: Conn { from, to, port, proto }, result: r })
        })
        .collect()
}

/// Probes the matrix and compares it with `expect`; Err holds the readable difference.
fn check_matrix(lab: &Lab, scenario: &str, expect: Expect) -> Result<Vec<Probe>, String> {
    let t = Instant::now();
    let probes = probe_matrix();
    let want = |c: &Conn| if expect(c) { 'X' } else { '.' };
    let bad: Vec<&Probe> = probes.iter().filter(|pr| pr.cell(lab) != want(&pr.conn)).collect();
    eprintln!(
        "{scenario}: {} probes in {:.1} s, {} allowed, {} differ",
        probes.len(),
        t.elapsed().as_secs_f64(),
        probes.iter().filter(|pr| expect(&pr.conn)).count(),
        bad.len()
    );
    if bad.is_empty() {
        return Ok(probes);
    }
    let mut out = format!(
        "scenario {scenario}: {} of {} probes differ from the expected matrix\n\
         (rows: from, columns: to; X connected to the target pod, . timeout, R refused, ? answered by another pod \
         or saw another client; * marks a difference)\n",
        bad.len(),
        probes.len()
    );
    let header: String = PODS.iter().map(|p| format!("{:>5}", p.key())).collect();
    for via in VIAS {
        for (port, proto) in PORTS {
            let block: Vec<&Probe> =
                probes.iter().filter(|pr| pr.via == via && pr.conn.port == port && pr.conn.proto == proto).collect();
            if !block.iter().any(|pr| pr.cell(lab) != want(&pr.conn)) {
                continue;
            }
            let _ = writeln!(out, "\n{}/{port} {}:", proto.lower().to_uppercase(), via.label());
            let _ = writeln!(out, "  expected {header}   | observed {header}");
            for from in PODS {
                let mut exp = String::new();
                let mut obs = String::new();
                for to in PODS {
                    match block.iter().find(|pr| pr.conn.from == from && pr.conn.to == to) {
                        None => {
                            exp.push_str("    -");
                            obs.push_str("    -");
                        }
                        Some(pr) => {
                            let (w, o) = (want(&pr.conn), pr.cell(lab));
                            let _ = write!(exp, "{w:>5}");
                            let _ = write!(obs, "{:>5}", if w == o { o.to_string() } else { format!("*{o}") });
                        }
                    }
                }
                let _ = writeln!(out, "  {:<8} {exp}   | {:<8} {obs}", from.key(), from.key());
            }
        }
    }
    let _ = writeln!(out, "\ndiffering probes:");
    for pr in bad.iter().take(60) {
        let _ = writeln!(
            out,
            "  {} -> {}: expected {}, got {}",
            pr.conn.from.key(),
            pr.target(),
            if expect(&pr.conn) { "connected (answered by the target)" } else { "timeout" },
            pr.result
        );
    }
    if bad.len() > 60 {
        let _ = writeln!(out, "  ... and {} more", bad.len() - 60);
    }
    Err(out)
}

/// Fails with every collected difference.
fn assert_no_failures(failures: &[String]) {
    assert!(failures.is_empty(), "{} scenario(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// A test's matrix checks: each scenario is probed and compared, its difference kept, and
/// [`MatrixChecks::finish`] fails with all of them (so one test reports every scenario).
struct MatrixChecks<'a> {
    lab: &'a Lab,
    failures: Vec<String>,
}

impl<'a> MatrixChecks<'a> {
    fn new(lab: &'a Lab) -> MatrixChecks<'a> {
        MatrixChecks { lab, failures: Vec::new() }
    }
    fn check(&mut self, scenario: &str, expect: Expect) {
        if let Err(e) = check_matrix(self.lab, scenario, expect) {
            self.failures.push(e);
        }
    }
    /// Fails with every difference kept, and `more` failures found otherwise.
    fn finish(mut self, more: Vec<String>) {
        self.failures.extend(more);
        assert_no_failures(&self.failures);
    }
}

// ---- Flow log ----

/// `podswitch show flows --json` (every record the switch still holds).
fn show_flows() -> Value {
    serde_json::from_str(&ok(&["show", "flows", "--json", "--limit", "100000"])).unwrap()
}

/// Records with sequence number >= `since`.
fn flows_since(v: &Value, since: u64) -> Vec<Value> {
    v["flows"].as_array().unwrap().iter().filter(|f| f["seq"].as_u64().unwrap() >= since).cloned().collect()
}

/// `policy` → allowed connections, from `show flows --json`.
fn policy_counts(v: &Value) -> BTreeMap<String, u64> {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["policy"].as_str().unwrap().to_string(), p["allowed_connections"].as_u64().unwrap()))
        .collect()
}

/// Waits (up to 3 s: the collector drains the workers every 100 ms) until `found` holds for
/// the records since `since`; returns the last answer either way.
fn wait_flows(since: u64, found: impl Fn(&[Value]) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = show_flows();
        if found(&flows_since(&v, since)) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- Sockets of the test's own inside the lab's pods ----

/// Runs `f` on a thread inside network namespace `ns`; sockets it creates stay in `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in a lab namespace panicked")
}

/// Whether `byte` arrives on `s` within `wait`.
fn got(s: &mut TcpStream, byte: u8, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1) if b[0] == byte)
}

/// A TCP connection of the test's own from one lab pod to another (by pod IP or through a
/// Service): the client's end and the server's accepted end.
struct TcpConn {
    what: String,
    client: TcpStream,
    server: TcpStream,
}

impl TcpConn {
    /// Connects from pod `from` to `addr`, which `listener` (in the destination pod) accepts;
    /// checks that a byte goes each way.
    fn open(what: &str, from: Pod, addr: SocketAddr, listener: &TcpListener) -> TcpConn {
        let client = in_netns(&from.netns(), move || TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("{what}: connect to {addr}: {e}"));
        let (server, peer) = listener.accept().unwrap();
        let source = client.local_addr().unwrap();
        assert_eq!(peer.ip(), source.ip(), "{what}: the server sees the client's own address");
        let mut c = TcpConn { what: what.to_string(), client, server };
        c.send(1);
        assert_eq!(c.received(1, Duration::from_secs(1)), (true, true), "{what}: a byte each way before any policy");
        c
    }

    fn source(&self) -> String {
        self.client.local_addr().unwrap().to_string()
    }

    /// Sends `byte` each way.
    fn send(&mut self, byte: u8) {
        self.client.write_all(&[byte]).unwrap();
        self.server.write_all(&[byte]).unwrap();
    }

    /// Whether `byte` arrived (at the server, at the client) within `wait`.
    fn received(&mut self, byte: u8, wait: Duration) -> (bool, bool) {
        (got(&mut self.server, byte, wait), got(&mut self.client, byte, wait))
    }
}

/// A UDP flow of the test's own from a lab pod to a server socket in another, answered once.
struct UdpFlow {
    what: String,
    client: UdpSocket,
    /// The client's address as the server sees it.
    seen: SocketAddr,
}

impl UdpFlow {
    fn open(what: &str, from: Pod, addr: SocketAddr, server: &UdpSocket) -> UdpFlow {
        let client = in_netns(&from.netns(), move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(addr).unwrap();
            s
        });
        client.send(&[1]).unwrap();
        let got = drain_udp(server, Duration::from_secs(1));
        let [(seen, 1)] = got[..] else { panic!("{what}: the server got {got:?}, not one datagram") };
        assert_eq!(seen.ip(), client.local_addr().unwrap().ip(), "{what}: the server sees the client's own address");
        let f = UdpFlow { what: what.to_string(), client, seen };
        f.send_back(server, 1);
        assert!(f.answer(1, Duration::from_secs(1)), "{what}: the answer did not arrive");
        f
    }

    fn source(&self) -> String {
        self.client.local_addr().unwrap().to_string()
    }

    fn send_back(&self, server: &UdpSocket, byte: u8) {
        server.send_to(&[byte], self.seen).unwrap();
    }

    /// Whether the server's `byte` arrived at the client within `wait`.
    fn answer(&self, byte: u8, wait: Duration) -> bool {
        self.client.set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 16];
        matches!(self.client.recv(&mut b), Ok(1) if b[0] == byte)
    }
}

/// Every one-byte datagram `server` receives until none comes for `wait`: (sender, byte).
fn drain_udp(server: &UdpSocket, wait: Duration) -> Vec<(SocketAddr, u8)> {
    server.set_read_timeout(Some(wait)).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 16];
    while let Ok((n, from)) = server.recv_from(&mut b) {
        if n == 1 {
            out.push((from, b[0]));
        }
    }
    out
}

/// Sends `byte` each way on every connection and flow, waits one second, and says which
/// misbehaved: `cut` and `udp_cut` must carry nothing more, `kept` everything.
fn check_cut(
    cut: &mut [TcpConn],
    kept: &mut [TcpConn],
    udp_cut: &[UdpFlow],
    udp_server: Option<&UdpSocket>,
    byte: u8,
) -> Vec<String> {
    for c in cut.iter_mut().chain(kept.iter_mut()) {
        c.send(byte);
    }
    for f in udp_cut {
        f.client.send(&[byte]).unwrap();
        f.send_back(udp_server.unwrap(), byte);
    }
    std::thread::sleep(Duration::from_secs(1));
    let short = Duration::from_millis(20);
    let mut failures = Vec::new();
    for c in cut.iter_mut() {
        let (there, back) = c.received(byte, short);
        if there || back {
            failures.push(format!(
                "{}: still carries bytes 1 s after the change (client -> server: {there}, server -> client: {back})",
                c.what
            ));
        }
    }
    for c in kept.iter_mut() {
        let (there, back) = c.received(byte, short);
        if !(there && back) {
            failures.push(format!(
                "{}: not concerned by the change, but cut (client -> server: {there}, server -> client: {back})",
                c.what
            ));
        }
    }
    if let Some(server) = udp_server {
        let got = drain_udp(server, short);
        for f in udp_cut {
            let (there, back) = (got.contains(&(f.seen, byte)), f.answer(byte, short));
            if there || back {
                failures.push(format!(
                    "{}: still carries datagrams 1 s after the change (client -> server: {there}, server -> client: {back})",
                    f.what
                ));
            }
        }
    }
    failures
}

/// A re-judged verdict the flow log must show for a connection of the test's own.
struct Rejudged {
    what: String,
    protocol: &'static str,
    source: String,
    from: Pod,
    to: Pod,
    destination: String,
    translated: String,
    verdict: &'static str,
    decided_by: String,
}

/// Waits for the re-judged records of `want` since `since` and checks them: each connection
/// has at least one, and all of its re-judged records say what `want` says.
fn check_rejudged(since: u64, want: &[Rejudged]) -> Vec<String> {
    let of = |fl: &[Value], w: &Rejudged| -> Vec<Value> {
        fl.iter()
            .filter(|f| f["rejudged"] == true && f["protocol"] == w.protocol && f["source"] == w.source.as_str())
            .cloned()
            .collect()
    };
    let v = wait_flows(since, |fl| want.iter().all(|w| !of(fl, w).is_empty()));
    let fl = flows_since(&v, since);
    let mut failures = Vec::new();
    for w in want {
        let recs = of(&fl, w);
        let good = |f: &Value| {
            f["verdict"] == w.verdict
                && f["decided_by"] == w.decided_by.as_str()
                && f["from"] == w.from.key().as_str()
                && f["to"] == w.to.key().as_str()
                && f["destination"] == w.destination.as_str()
                && f["translated"] == w.translated.as_str()
        };
        if recs.is_empty() || !recs.iter().all(good) {
            failures.push(format!(
                "{} from {}: expected re-judged records saying {} by {:?}, got [{}]; every record since the change:\n{}",
                w.what,
                w.source,
                w.verdict,
                w.decided_by,
                recs.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join(", "),
                fl.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n")
            ));
        }
    }
    failures
}

// ---- Tests ----

/// No policy, then each example of `examples/policies` alone, then none again.
#[test]
fn example_policies_one_at_a_time() {
    let Some(lab) = Lab::up("example_policies_one_at_a_time") else { return };
    assert_eq!(lab.ip(pod("x/b")), "10.244.0.3", "06's except names the address a fresh lab gives x/b");
    let mut matrix = MatrixChecks::new(&lab);
    let mut node_failures = Vec::new();
    matrix.check("no policy", &everything);
    for (file, expect) in example_scenarios() {
        lab.apply_example(file);
        matrix.check(file, &expect);
        if file == DENY_INGRESS {
            // The node reaches its pods whatever their policies (kubelet probes). (By pod IP:
            // the node's stack has no route to the Service CIDR in the lab.)
            let r = probe(&[
                "--from",
                "node",
                "--timeout-ms",
                "1000",
                "--to",
                "pod/x/a:80",
                "pod/x/b:81/udp",
                "pod/x/c:81",
            ]);
            for r in &r {
                if r["result"] != "connected" {
                    node_failures.push(format!("{file}: the node must reach its pods: {r}"));
                }
            }
        }
        lab.remove(file);
    }
    matrix.check("no policy again (every example removed)", &everything);
    matrix.finish(node_failures);
}

/// Policies added, edited and deleted while the lab runs.
#[test]
fn live_policy_add_edit_delete() {
    let Some(lab) = Lab::up("live_policy_add_edit_delete") else { return };
    let mut matrix = MatrixChecks::new(&lab);
    lab.apply_example(DENY_INGRESS);
    matrix.check("default-deny-ingress in x", &x_isolated);
    lab.apply_example(ALLOW_SAME_NS);
    matrix.check("default-deny-ingress + allow-same-namespace added", &x_accepts_x);
    // The same policy edited in place: x accepts only x/b now.
    let same_ns = fs::read_to_string(examples("policies").join(ALLOW_SAME_NS)).unwrap();
    let edited = same_ns.replace("- podSelector: {}", "- podSelector: {matchLabels: {pod: b}}");
    assert_ne!(edited, same_ns);
    lab.write(ALLOW_SAME_NS, &edited);
    matrix.check("allow-same-namespace edited to allow x/b only", &|c| c.to.ns != "x" || c.from.is("x/b"));
    lab.remove(ALLOW_SAME_NS);
    matrix.check("allow-same-namespace deleted", &x_isolated);
    // The same policy in every namespace (y and z too): each namespace keeps to itself.
    for ns in ["y", "z"] {
        lab.write(&format!("same-ns-{ns}.yaml"), &same_ns.replace("namespace: x", &format!("namespace: {ns}")));
    }
    matrix.check("default-deny-ingress in x, allow-same-namespace in y and z", &|c| c.to.ns != "x" && c.from.ns == c.to.ns);
    lab.apply_example(ALLOW_SAME_NS);
    matrix.check("allow-same-namespace in x, y and z", &|c| c.from.ns == c.to.ns);
    lab.remove(ALLOW_SAME_NS);
    lab.remove("same-ns-y.yaml");
    lab.remove("same-ns-z.yaml");
    matrix.check("back to default-deny-ingress in x only", &x_isolated);
    lab.remove(DENY_INGRESS);
    matrix.check("default-deny-ingress deleted", &everything);
    // A policy the API server would refuse (a bad CIDR) fails closed: x/a, which it selects,
    // is isolated and the policy allows nothing.
    lab.write(
        "bad-cidr.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: bad-cidr\n  namespace: x\n\
         spec:\n  podSelector:\n    matchLabels: {pod: a}\n  ingress:\n    - from:\n        - ipBlock: {cidr: 10.0.0.0/33}\n",
    );
    matrix.check("an invalid policy selecting x/a", &|c| !c.to.is("x/a"));
    lab.remove("bad-cidr.yaml");
    matrix.check("the invalid policy deleted", &everything);
    matrix.finish(Vec::new());
}

/// Pod label changes on both sides: the peer (`role: client`) and the selected pod (`tier: db`).
#[test]
fn live_pod_label_changes() {
    let Some(lab) = Lab::up("live_pod_label_changes") else { return };
    const POLICY: &str = "db-from-clients.yaml";
    let mut matrix = MatrixChecks::new(&lab);
    // Pods of x labelled tier=db accept pods labelled role=client of any namespace.
    lab.write(
        POLICY,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: db-from-clients\n  namespace: x\n\
         spec:\n  podSelector:\n    matchLabels: {tier: db}\n  ingress:\n    - from:\n        \
         - namespaceSelector: {}\n          podSelector:\n            matchLabels: {role: client}\n",
    );
    matrix.check("db-from-clients, no pod labelled", &everything);
    lab.set_pod_labels("x", "a", &["tier: db"]);
    matrix.check("x/a labelled tier=db: isolated", &|c| !c.to.is("x/a"));
    lab.set_pod_labels("y", "a", &["role: client"]);
    matrix.check("y/a labelled role=client: reaches x/a", &|c| !c.to.is("x/a") || c.from.is("y/a"));
    lab.set_pod_labels("x", "b", &["tier: db"]);
    matrix.check("x/b labelled tier=db too", &|c| !(c.to.is("x/a") || c.to.is("x/b")) || c.from.is("y/a"));
    lab.set_pod_labels("y", "a", &[]);
    matrix.check("role=client removed from y/a", &|c| !(c.to.is("x/a") || c.to.is("x/b")));
    lab.set_pod_labels("x", "a", &[]);
    lab.set_pod_labels("x", "b", &[]);
    matrix.check("tier=db removed from x/a and x/b", &everything);
    matrix.finish(Vec::new());
}

/// Namespace label changes: a namespaceSelector on `team: blue`.
#[test]
fn live_namespace_label_change() {
    let Some(lab) = Lab::up("live_namespace_label_change") else { return };
    const POLICY: &str = "x-from-team-blue.yaml";
    let mut matrix = MatrixChecks::new(&lab);
    lab.write(
        POLICY,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: from-team-blue\n  namespace: x\n\
         spec:\n  podSelector: {}\n  ingress:\n    - from:\n        - namespaceSelector:\n            \
         matchLabels: {team: blue}\n",
    );
    matrix.check("from-team-blue, no namespace labelled", &x_isolated);
    lab.set_namespace_labels("y", &["team: blue"]);
    matrix.check("namespace y labelled team=blue", &|c| c.to.ns != "x" || c.from.ns == "y");
    lab.set_namespace_labels("y", &[]);
    lab.set_namespace_labels("z", &["team: blue"]);
    matrix.check("the label moved from y to z", &|c| c.to.ns != "x" || c.from.ns == "z");
    lab.set_namespace_labels("z", &[]);
    matrix.check("team=blue removed from z", &x_isolated);
    lab.remove(POLICY);
    matrix.check("from-team-blue deleted", &everything);
    matrix.finish(Vec::new());
}

/// Established TCP and UDP connections (by pod IP and through a Service) that a new policy
/// denies carry nothing more once it is in force; one the policy does not concern goes on.
#[test]
fn established_connections_cut_by_new_policy() {
    let Some(lab) = Lab::up("established_connections_cut_by_new_policy") else { return };
    let (client, server, bystander) = (pod("y/a"), pod("x/b"), pod("z/a"));
    // Servers of the test's own on port 9090 (no containerPort: a policy without ports covers
    // every port).
    let tcp_server = in_netns(&server.netns(), || TcpListener::bind("0.0.0.0:9090").expect("bind TCP 9090 in x/b"));
    let udp_server = in_netns(&server.netns(), || UdpSocket::bind("0.0.0.0:9090").expect("bind UDP 9090 in x/b"));
    let tcp_bystander =
        in_netns(&bystander.netns(), || TcpListener::bind("0.0.0.0:9090").expect("bind TCP 9090 in z/a"));
    let by_ip: SocketAddr = format!("{}:9090", lab.ip(server)).parse().unwrap();
    let by_svc: SocketAddr = format!("{}:9090", server.cluster_ip()).parse().unwrap();
    let mut cut = vec![
        TcpConn::open("TCP y/a -> x/b by pod IP", client, by_ip, &tcp_server),
        TcpConn::open("TCP y/a -> x/b through its Service", client, by_svc, &tcp_server),
    ];
    let udp = vec![
        UdpFlow::open("UDP y/a -> x/b by pod IP", client, by_ip, &udp_server),
        UdpFlow::open("UDP y/a -> x/b through its Service", client, by_svc, &udp_server),
    ];
    let z_a: SocketAddr = format!("{}:9090", lab.ip(bystander)).parse().unwrap();
    let mut kept = vec![TcpConn::open("TCP y/a -> z/a by pod IP", client, z_a, &tcp_bystander)];
    let since = show_flows()["next"].as_u64().unwrap();

    // Deny every ingress of x: each connection to x/b is judged again on its next packet.
    let t0 = Instant::now();
    lab.apply_example(DENY_INGRESS);
    wait_applied();
    eprintln!("default-deny-ingress applied by the lab and the switch {} ms after the edit", t0.elapsed().as_millis());
    let mut failures = check_cut(&mut cut, &mut kept, &udp, Some(&udp_server), 3);

    // The verdict log shows each of them judged again.
    let record = |what: &str, protocol, source, to: Pod, dest: SocketAddr, verdict, decided_by: &str| Rejudged {
        what: what.to_string(),
        protocol,
        source,
        from: client,
        to,
        destination: dest.to_string(),
        translated: format!("{}:9090", lab.ip(to)),
        verdict,
        decided_by: decided_by.to_string(),
    };
    let deny = "default deny (ingress of the destination)";
    let mut want = Vec::new();
    for (c, dest) in cut.iter().zip([by_ip, by_svc]) {
        want.push(record(&c.what, "tcp", c.source(), server, dest, "denied", deny));
    }
    for (f, dest) in udp.iter().zip([by_ip, by_svc]) {
        want.push(record(&f.what, "udp", f.source(), server, dest, "denied", deny));
    }
    let not_isolated = "not isolated (no policy selects the pods in this direction)";
    want.push(record(&kept[0].what, "tcp", kept[0].source(), bystander, z_a, "allowed", not_isolated));
    failures.extend(check_rejudged(since, &want));
    drop((cut, kept, udp, tcp_server, udp_server, tcp_bystander));
    assert_no_failures(&failures);
}

/// Established connections allowed by a pod label (`role: client`, rule 0) or a namespace
/// label (`team: blue`, rule 1) are cut when the label goes; the others go on.
#[test]
fn established_connections_cut_by_label_changes() {
    let Some(lab) = Lab::up("established_connections_cut_by_label_changes") else { return };
    lab.set_pod_labels("y", "a", &["role: client"]);
    lab.set_namespace_labels("z", &["team: blue"]);
    lab.write(
        "clients-or-blue.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: clients-or-blue\n  namespace: x\n\
         spec:\n  podSelector: {}\n  ingress:\n    - from:\n        - namespaceSelector: {}\n          podSelector:\n            \
         matchLabels: {role: client}\n    - from:\n        - namespaceSelector:\n            matchLabels: {team: blue}\n",
    );
    wait_applied();
    let (x_b, x_c) = (pod("x/b"), pod("x/c"));
    let listen = |p: Pod| in_netns(&p.netns(), || TcpListener::bind("0.0.0.0:9090").expect("bind TCP 9090"));
    let (l_b, l_c) = (listen(x_b), listen(x_c));
    let x_b_ip: SocketAddr = format!("{}:9090", lab.ip(x_b)).parse().unwrap();
    let x_b_svc: SocketAddr = format!("{}:9090", x_b.cluster_ip()).parse().unwrap();
    let x_c_ip: SocketAddr = format!("{}:9090", lab.ip(x_c)).parse().unwrap();
    let mut by_role = vec![TcpConn::open("TCP y/a (role=client) -> x/b by pod IP", pod("y/a"), x_b_ip, &l_b)];
    let mut by_ns = vec![
        TcpConn::open("TCP z/a (namespace team=blue) -> x/b through its Service", pod("z/a"), x_b_svc, &l_b),
        TcpConn::open("TCP z/c (namespace team=blue) -> x/c by pod IP", pod("z/c"), x_c_ip, &l_c),
    ];
    // Rule 0 allows role=client, rule 1 namespaces labelled team=blue.
    let rule = "x/clients-or-blue rule 1".to_string();
    let deny = "default deny (ingress of the destination)".to_string();
    let rejudged = |c: &TcpConn, from: &str, to: Pod, dest: SocketAddr, verdict, decided_by: &String| Rejudged {
        what: c.what.clone(),
        protocol: "tcp",
        source: c.source(),
        from: pod(from),
        to,
        destination: dest.to_string(),
        translated: format!("{}:9090", lab.ip(to)),
        verdict,
        decided_by: decided_by.clone(),
    };

    // y/a loses its label: its connection is cut, those from namespace z go on.
    let since = show_flows()["next"].as_u64().unwrap();
    lab.set_pod_labels("y", "a", &[]);
    wait_applied();
    let mut failures = check_cut(&mut by_role, &mut by_ns, &[], None, 2);
    failures.extend(check_rejudged(
        since,
        &[
            rejudged(&by_role[0], "y/a", x_b, x_b_ip, "denied", &deny),
            rejudged(&by_ns[0], "z/a", x_b, x_b_svc, "allowed", &rule),
            rejudged(&by_ns[1], "z/c", x_c, x_c_ip, "allowed", &rule),
        ],
    ));

    // Namespace z loses its label: the connections from z are cut.
    let since = show_flows()["next"].as_u64().unwrap();
    lab.set_namespace_labels("z", &[]);
    wait_applied();
    failures.extend(check_cut(&mut by_ns, &mut [], &[], None, 3));
    failures.extend(check_rejudged(
        since,
        &[
            rejudged(&by_ns[0], "z/a", x_b, x_b_svc, "denied", &deny),
            rejudged(&by_ns[1], "z/c", x_c, x_c_ip, "denied", &deny),
        ],
    ));
    drop((by_role, by_ns, l_b, l_c));
    assert_no_failures(&failures);
}

/// Clients outside the cluster (`external`, masqueraded to the node's address on the way to a
/// ClusterIP) are judged on their own address: the rule that lets the node reach its pods does
/// not let them in, an ipBlock of their address does.
#[test]
fn external_clients_judged_by_their_own_address() {
    let Some(lab) = Lab::up("external_clients_judged_by_their_own_address") else { return };
    const POLICY: &str = "x-from-ip-block.yaml";
    let ip_block = |cidr: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: from-ip-block\n  namespace: x\n\
             spec:\n  podSelector: {{}}\n  ingress:\n    - from:\n        - ipBlock: {{cidr: {cidr}}}\n"
        )
    };
    let mut failures = Vec::new();
    let mut targets = Vec::new();
    for to in PODS {
        for (port, proto) in PORTS {
            targets.push((to, format!("svc/{}:{port}/{}", to.key(), proto.lower())));
        }
    }
    let mut check = |scenario: &str, allowed: &dyn Fn(Pod) -> bool| -> Vec<Value> {
        let mut args = vec!["--from", "external", "--timeout-ms", MATRIX_TIMEOUT_MS, "--to"];
        args.extend(targets.iter().map(|(_, t)| t.as_str()));
        let results = probe(&args);
        let wrong: Vec<String> = results
            .iter()
            .zip(&targets)
            .filter(|(r, (to, _))| {
                if allowed(*to) {
                    !(r["result"] == "connected" && r["answered_by"] == to.key().as_str())
                } else {
                    r["result"] != "timeout"
                }
            })
            .map(|(r, (to, _))| format!("  expected {}: {r}", if allowed(*to) { "connected" } else { "timeout" }))
            .collect();
        eprintln!("external, {scenario}: {} probes, {} differ", results.len(), wrong.len());
        if !wrong.is_empty() {
            failures.push(format!(
                "external, {scenario}: {} of {} probes differ:\n{}",
                wrong.len(),
                results.len(),
                wrong.join("\n")
            ));
        }
        results
    };
    check("no policy", &|_| true);
    lab.apply_example(DENY_INGRESS);
    let since = show_flows()["next"].as_u64().unwrap();
    let denied = check("default-deny-ingress in x", &|to| to.ns != "x");
    lab.write(POLICY, &ip_block("172.18.0.2/32"));
    check("x accepts the node's address only", &|to| to.ns != "x");
    lab.write(POLICY, &ip_block("172.18.0.100/32"));
    check("x accepts external's address", &|_| true);
    lab.remove(POLICY);
    lab.remove(DENY_INGRESS);
    check("no policy again", &|_| true);
    // The denied probes are logged with external's own address.
    let denied: Vec<&Value> = denied.iter().filter(|r| r["result"] == "timeout").collect();
    let v = show_flows();
    let fl = flows_since(&v, since);
    for r in denied {
        let found = fl.iter().any(|f| {
            f["source"] == r["source"]
                && f["destination"] == r["address"]
                && f["verdict"] == "denied"
                && f["decided_by"] == "default deny (ingress of the destination)"
                && f["from"].is_null()
        });
        if !found {
            failures.push(format!("no denied record from external's own address for {r}"));
            break;
        }
    }
    assert_no_failures(&failures);
}

/// "A pod cannot block access to itself" (the Kubernetes documentation, NetworkPolicy): a pod
/// reaching itself through its own Service (hairpin: the switch sends the connection back to
/// it, masqueraded to the node's address) is allowed whatever the policies that select it.
/// (By its own IP a pod reaches itself over its loopback, never through the switch.)
#[test]
fn pod_reaches_itself_through_its_service_whatever_its_policies() {
    let Some(lab) = Lab::up("pod_reaches_itself_through_its_service_whatever_its_policies") else { return };
    let xs = [pod("x/a"), pod("x/b"), pod("x/c")];
    let mut targets = Vec::new();
    for to in xs {
        for via in [Via::Service, Via::ServiceNamedPort] {
            for (port, proto) in PORTS {
                let pr = Probe { via, conn: Conn { from: to, to, port, proto }, result: Value::Null };
                targets.push(pr.target());
            }
        }
    }
    let mut failures = Vec::new();
    let mut check = |scenario: &str| {
        let mut args = vec!["--from", "x/a", "x/b", "x/c", "--timeout-ms", MATRIX_TIMEOUT_MS, "--to"];
        args.extend(targets.iter().map(String::as_str));
        let results = probe(&args);
        let own = |r: &&Value| r["to"].as_str().unwrap().starts_with(&format!("svc/{}:", r["from"].as_str().unwrap()));
        let wrong: Vec<String> = results
            .iter()
            .filter(own)
            .filter(|r| !(r["result"] == "connected" && r["answered_by"] == r["from"]))
            .map(|r| format!("  {r}"))
            .collect();
        eprintln!(
            "{scenario}: {} probes of a pod to itself, {} not connected",
            results.iter().filter(own).count(),
            wrong.len()
        );
        if !wrong.is_empty() {
            failures.push(format!(
                "{scenario}: {} of 24 probes of a pod of x to its own Service are not answered by it:\n{}",
                wrong.len(),
                wrong.join("\n")
            ));
        }
    };
    check("no policy");
    lab.apply_example(DENY_INGRESS);
    check("default-deny-ingress in x");
    lab.apply_example("10-default-deny-egress.yaml");
    check("default-deny-ingress and default-deny-egress in x");
    lab.remove(DENY_INGRESS);
    check("default-deny-egress in x");
    assert_no_failures(&failures);
}

/// `show flows --json`: a record for every probe of a matrix, with the verdict, the policy and
/// rule or default deny that decided, addresses as sent and translated; per-policy counts
/// rising with the allowed connections.
#[test]
fn flow_log_records_every_verdict() {
    let Some(lab) = Lab::up("flow_log_records_every_verdict") else { return };
    lab.apply_example(ALLOW_SAME_NS);
    lab.apply_example("11-egress-to-one-pod.yaml");
    wait_applied();
    let before = show_flows();
    let since = before["next"].as_u64().unwrap();
    let counts0 = policy_counts(&before);
    let same_ns = "x/allow-same-namespace";
    let egress = "x/a-egress-to-y-a";
    for pol in [same_ns, egress] {
        assert!(counts0.contains_key(pol), "{pol} is not in {counts0:?}");
    }
    // (verdict, decided by, policy) of a connection under these two policies.
    let decider = |c: &Conn| -> (&str, String, Option<&str>) {
        if c.from.is("x/a") {
            if c.to.is("y/a") {
                ("allowed", format!("{egress} rule 0"), Some(egress))
            } else {
                ("denied", "default deny (egress of the source)".into(), None)
            }
        } else if c.to.ns == "x" {
            if c.from.ns == "x" {
                ("allowed", format!("{same_ns} rule 0"), Some(same_ns))
            } else {
                ("denied", "default deny (ingress of the destination)".into(), None)
            }
        } else {
            ("allowed", "not isolated (no policy selects the pods in this direction)".into(), None)
        }
    };
    let mut failures = Vec::new();
    let probes = match check_matrix(&lab, "allow-same-namespace + a-egress-to-y-a", &|c| decider(c).0 == "allowed") {
        Ok(p) => p,
        Err(e) => {
            failures.push(e);
            probe_matrix()
        }
    };
    // A record is found by protocol, source and destination as sent (a probe's source port may
    // be reused by a later probe of the same pod once the first has finished).
    type Key = (String, String, String);
    let key = |f: &Value| -> Key {
        let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
        (s("protocol"), s("source"), s("destination"))
    };
    let probe_key = |pr: &Probe| -> Option<Key> {
        let source = pr.result["source"].as_str()?.to_string();
        Some((pr.conn.proto.lower().to_string(), source, pr.result["address"].as_str()?.to_string()))
    };
    let wanted: Vec<Key> = probes.iter().filter_map(probe_key).collect();
    let v = wait_flows(since, |fl| {
        let have: std::collections::BTreeSet<_> = fl.iter().map(key).collect();
        wanted.iter().all(|w| have.contains(w))
    });
    let fl = flows_since(&v, since);
    let mut by_source: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    for f in &fl {
        by_source.entry(key(f)).or_default().push(f);
    }
    let mut wrong = Vec::new();
    for pr in &probes {
        let Some(src) = pr.result["source"].as_str() else {
            wrong.push(format!(
                "{} -> {}: the probe has no source address: {}",
                pr.conn.from.key(),
                pr.target(),
                pr.result
            ));
            continue;
        };
        let (verdict, decided_by, policy) = decider(&pr.conn);
        let dest_ip = match pr.via {
            Via::PodIp => lab.ip(pr.conn.to).to_string(),
            Via::Service | Via::ServiceNamedPort => pr.conn.to.cluster_ip(),
        };
        let recs = probe_key(pr).and_then(|k| by_source.get(&k).cloned()).unwrap_or_default();
        let good = |f: &Value| {
            f["verdict"] == verdict
                && f["decided_by"] == decided_by.as_str()
                && f["policy"].as_str() == policy
                && f["rejudged"] == false
                && f["from"] == pr.conn.from.key().as_str()
                && f["to"] == pr.conn.to.key().as_str()
                && f["source"] == src
                && f["destination"] == format!("{dest_ip}:{}", pr.via.port(pr.conn.port)).as_str()
                && f["translated"] == format!("{}:{}", lab.ip(pr.conn.to), pr.conn.port).as_str()
        };
        if recs.is_empty() || !recs.iter().all(|f| good(f)) {
            wrong.push(format!(
                "{} -> {} from {src}: expected {verdict} by {decided_by:?}, records: [{}]",
                pr.conn.from.key(),
                pr.target(),
                recs.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if !wrong.is_empty() {
        failures.push(format!(
            "{} of {} probes lack a right flow record:\n  {}",
            wrong.len(),
            probes.len(),
            wrong.iter().take(40).cloned().collect::<Vec<_>>().join("\n  ")
        ));
    }
    // Counts: each policy's counter rose by its allowed records (self probes through a
    // Service included), at least by the matrix's allowed probes it decided.
    let counts1 = policy_counts(&v);
    for pol in [same_ns, egress] {
        let in_matrix = probes.iter().filter(|pr| decider(&pr.conn).2 == Some(pol)).count() as u64;
        let recorded = fl.iter().filter(|f| f["policy"] == pol && f["verdict"] == "allowed").count() as u64;
        let rose = counts1.get(pol).copied().unwrap_or(0) - counts0[pol];
        if rose != recorded || rose < in_matrix {
            failures.push(format!(
                "{pol}: allowed_connections rose by {rose}; {recorded} allowed records name it, the matrix has {in_matrix} \
                 connections it allows"
            ));
        }
    }
    // `show policies`: what each selects, and the pods its peers match now.
    let pols: Value = serde_json::from_str(&ok(&["show", "policies", "--json"])).unwrap();
    let view = |name: &str| pols["policies"].as_array().unwrap().iter().find(|p| p["policy"] == name).cloned();
    let pods_of = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str())
            .map(|p| p.split(' ').next().unwrap().to_string())
            .collect()
    };
    match view(same_ns) {
        Some(v) => {
            let x = vec!["x/a".to_string(), "x/b".into(), "x/c".into()];
            let good = v["status"] == "ok"
                && v["policy_types"] == serde_json::json!(["Ingress"])
                && pods_of(&v["selected_local_pods"]) == x
                && pods_of(&v["ingress"][0]["peers"][0]["pods"]) == x;
            if !good {
                failures.push(format!("show policies: {same_ns} selects and allows x/a, x/b, x/c: {v}"));
            }
        }
        None => failures.push(format!("show policies has no {same_ns}: {pols}")),
    }
    match view(egress) {
        Some(v) => {
            let good = v["policy_types"] == serde_json::json!(["Egress"])
                && pods_of(&v["selected_local_pods"]) == vec!["x/a".to_string()]
                && pods_of(&v["egress"][0]["peers"][0]["pods"]) == vec!["y/a".to_string()];
            if !good {
                failures.push(format!("show policies: {egress} selects x/a and allows y/a: {v}"));
            }
        }
        None => failures.push(format!("show policies has no {egress}: {pols}")),
    }
    // The text form says the same.
    let out = ok(&["show", "flows", "--limit", "5000"]);
    for s in [
        "denied",
        "default deny (ingress of the destination)",
        "default deny (egress of the source)",
        "x/allow-same-namespace rule 0",
    ] {
        if !out.contains(s) {
            failures.push(format!("`show flows` does not mention {s:?}"));
        }
    }
    assert_no_failures(&failures);
}

/// Whether one ICMP echo from pod `from`'s namespace to `ip` is answered within 1 s.
fn ping(from: Pod, ip: &str) -> bool {
    let ns = from.netns();
    std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "ping", "-n", "-q", "-c", "1", "-W", "1", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// ICMP echo under policy, as Kubernetes defines it: a port-less rule allows every protocol,
/// a rule with ports allows only those, and isolation with no rule allows nothing; the echo
/// reply rides on the request's verdict.
#[test]
fn icmp_echo_is_judged_like_any_protocol() {
    let Some(lab) = Lab::up("icmp_echo_is_judged_like_any_protocol") else { return };
    let (xa, xb, ya) = (pod("x/a"), pod("x/b"), pod("y/a"));
    let ip = |p: Pod| lab.ips[&p.key()].clone();
    let mut failures = Vec::new();
    let mut expect = |scenario: &str, from: Pod, to: Pod, allowed: bool| {
        let got = ping(from, &ip(to));
        if got != allowed {
            failures.push(format!("{scenario}: ping {} -> {}: expected {}, got {}", from.key(), to.key(), allowed, got));
        }
    };
    expect("no policy", ya, xa, true);
    expect("no policy", xb, xa, true);
    lab.apply_example(DENY_INGRESS);
    wait_applied();
    expect("default-deny-ingress in x", ya, xa, false);
    expect("default-deny-ingress in x", xb, xa, false);
    expect("default-deny-ingress in x (y not isolated)", xa, ya, true);
    lab.apply_example(ALLOW_SAME_NS);
    wait_applied();
    expect("allow-same-namespace (no ports)", xb, xa, true);
    expect("allow-same-namespace (no ports)", ya, xa, false);
    lab.remove(ALLOW_SAME_NS);
    lab.apply_example("09-end-port-range.yaml");
    wait_applied();
    expect("a rule with ports", xb, xa, false);
    expect("a rule with ports", ya, xa, false);
    assert_no_failures(&failures);
}
