//! `podswitch lab probe`: connectivity between lab namespaces, with real sockets.
//!
//! Contract:
//! - Sources (`--from`): `NS/POD` (a pod of the lab), `node` (the first node's own stack in
//!   `psl-node`), NODENAME (that lab node's own stack in its namespace) or `external` (the
//!   client outside the cluster, `psl-external`); default: every pod. Targets (`--to`), each optionally suffixed `/tcp` or `/udp` (tcp by default):
//!   - `pod/NS/NAME:PORT`: the pod's IP;
//!   - `svc/NS/NAME:PORT`: the Service's ClusterIP: `spec.clusterIP` of the API view, else the
//!     ClusterIP the switch serves for it (`show services`, kind `clusterip`: an allocated one);
//!   - `nodeport/NS/NAME:PORT`: the node's InternalIP and the NodePort of the Service port
//!     numbered PORT with the target's protocol. From the switch: its `clusterip` frontend of
//!     the Service with `port` PORT and that protocol names the Service port (`name`,
//!     `NS/NAME:PORTNAME`); the `nodeport` frontend with the same `name` and protocol gives the
//!     NodePort (its `port`). Without a running switch: the `nodePort` written in the view;
//!   - `lb/NS/NAME:PORT`: the first LoadBalancer ingress IP, port PORT. From the switch: its
//!     first `loadbalancer` frontend of the Service with `port` PORT and that protocol; without
//!     a running switch: the first `status.loadBalancer.ingress[].ip` of the view;
//!   - `IP:PORT`.
//! - First waits (`--sync-timeout`, 30 s) until the lab has applied the current content of the
//!   manifest directory and, when the switch runs, until the switch has applied the current API
//!   view with no pending port; content that cannot be applied fails at once.
//! - Then probes every (from, to) pair at once, each on its own thread that entered the source
//!   namespace. TCP: non-blocking connect with `--timeout-ms`, then read the answer line. UDP: a
//!   connected socket sends one datagram and waits for the answer.
//! - Result per pair: `connected` (with the answering pod and the client address it saw, when
//!   it answered), `refused` (RST, or an ICMP unreachable / port unreachable) or `timeout`.
//! - Output: a matrix (sources × targets), or with `--json` exactly one object
//!   `{"results":[{"from","to","address","result","answered_by","source","seen_client"}]}` with
//!   `to` as given and `address` the `IP:PORT` it resolved to. Exit 0 when probing ran, whatever the results; 1 on usage or lab errors.
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
use serde_json::json;

use super::exec::{is_node, target_netns};
use super::state::{self, State};
use super::{apiview, netns, switch};
use podswitch_control::ctl::{client, Request};
use podswitch_control::manifests;

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Source: NS/POD, `node` (the first node's own stack), NODENAME (that lab node's own stack)
    /// or `external` (the client outside the cluster, behind the switches' uplinks) (repeatable,
    /// or several values). Default: every pod.
    #[arg(long = "from", value_name = "NS/POD|node|NODENAME|external", num_args = 1..)]
    pub from: Vec<String>,
    /// Target (repeatable, or several values), each optionally followed by /tcp or /udp (default
    /// tcp):
    ///
    /// pod/NS/NAME:PORT: the pod's IP.
    ///
    /// svc/NS/NAME:PORT: the Service's ClusterIP (spec.clusterIP in the manifests, else the one
    /// the switch allocated, from `podswitch show services`).
    ///
    /// nodeport/NS/NAME:PORT: the node's InternalIP and the NodePort of the Service port
    /// numbered PORT (with that protocol), as the switch serves it: its ClusterIP frontend
    /// with that port and protocol names the Service port (NS/NAME:PORTNAME), and the NodePort
    /// frontend of that name and protocol gives the NodePort. Without a running switch, the
    /// nodePort written in the manifests.
    ///
    /// lb/NS/NAME:PORT: the Service's first LoadBalancer ingress IP (the first one the switch
    /// serves for that port and protocol; without a running switch, the first
    /// status.loadBalancer.ingress[].ip of the manifests), port PORT.
    ///
    /// IP:PORT: that address (e.g. an externalIP).
    #[arg(long = "to", value_name = "TARGET", num_args = 1.., required = true)]
    pub to: Vec<String>,
    /// How long each probe waits for a connection and an answer.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub timeout_ms: u64,
    /// Print one JSON object instead of the matrix.
    #[arg(long)]
    pub json: bool,
    /// How long to wait until the lab and the switch are in sync before probing.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub sync_timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Pod { namespace: String, name: String },
    /// The Service's ClusterIP.
    Service { namespace: String, name: String },
    /// The node's InternalIP and the NodePort of the Service port.
    NodePort { namespace: String, name: String },
    /// The Service's first LoadBalancer ingress IP.
    LoadBalancer { namespace: String, name: String },
    Ip(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub text: String,
    pub dest: Dest,
    pub port: u16,
    pub proto: Proto,
}

impl Target {
    /// `ns/name` of the pod the target stands for: a pod target, or an IP of a lab pod.
    fn pod(&self, st: &State) -> Option<String> {
        match &self.dest {
            Dest::Pod { namespace, name } => Some(format!("{namespace}/{name}")),
            Dest::Ip(ip) => st.pods.values().find(|p| p.ip == *ip).map(super::state::PodState::key),
            Dest::Service { .. } | Dest::NodePort { .. } | Dest::LoadBalancer { .. } => None,
        }
    }
}

/// Parses a TARGET (see [`ProbeArgs::to`]).
pub fn parse_target(s: &str) -> anyhow::Result<Target> {
    let usage = || {
        anyhow!(
            "{s:?} is not a target: use pod/NS/NAME:PORT, svc/NS/NAME:PORT, nodeport/NS/NAME:PORT, lb/NS/NAME:PORT \
             or IP:PORT, optionally with /tcp or /udp"
        )
    };
    let (rest, proto) = if let Some(r) = s.strip_suffix("/tcp") {
        (r, Proto::Tcp)
    } else if let Some(r) = s.strip_suffix("/udp") {
        (r, Proto::Udp)
    } else {
        (s, Proto::Tcp)
    };
    let (head, port) = rest.rsplit_once(':').ok_or_else(usage)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(usage)?;
    let ns_name = |t: &str| -> anyhow::Result<(String, String)> {
        match t.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((ns.into(), name.into()))
            }
            _ => Err(usage()),
        }
    };
    let dest = if let Some(t) = head.strip_prefix("pod/") {
        let (namespace, name) = ns_name(t)?;
        Dest::Pod { namespace, name }
    } else if let Some(t) = head.strip_prefix("svc/") {
        let (namespace, name) = ns_name(t)?;
        Dest::Service { namespace, name }
    } else if let Some(t) = head.strip_prefix("nodeport/") {
        let (namespace, name) = ns_name(t)?;
        Dest::NodePort { namespace, name }
    } else if let Some(t) = head.strip_prefix("lb/") {
        let (namespace, name) = ns_name(t)?;
        Dest::LoadBalancer { namespace, name }
    } else {
        Dest::Ip(head.parse().map_err(|_| usage())?)
    };
    Ok(Target { text: s.to_string(), dest, port, proto })
}

/// Why the lab's switch cannot tell which Service frontends it serves (a phrase, completing
/// "Service X has no ... in the manifests and ...").
#[derive(Debug, Clone, thiserror::Error)]
enum NoSwitchServices {
    #[error("the lab's switch is not running")]
    NotRunning,
    /// The control socket's error, as text (kept in a cache that is read more than once).
    #[error("the lab's switch does not answer `show services` ({0})")]
    NoAnswer(String),
}

/// The Service frontends the lab's switch serves (`show services`), asked for at most once.
struct SwitchServices<'a> {
    st: &'a State,
    views: std::cell::OnceCell<Result<Vec<serde_json::Value>, NoSwitchServices>>,
}

impl<'a> SwitchServices<'a> {
    fn new(st: &'a State) -> Self {
        SwitchServices { st, views: std::cell::OnceCell::new() }
    }

    /// The views, or why the switch cannot give them.
    fn views(&self) -> Result<&[serde_json::Value], NoSwitchServices> {
        self.views
            .get_or_init(|| {
                if !self.st.switch.process.is_some_and(|p| p.alive()) {
                    return Err(NoSwitchServices::NotRunning);
                }
                let v = client::request(&self.st.switch.control_socket, &Request::Services)
                    .map_err(|e| NoSwitchServices::NoAnswer(e.to_string()))?;
                Ok(v.get("services").and_then(|s| s.as_array()).cloned().unwrap_or_default())
            })
            .as_deref()
            .map_err(Clone::clone)
    }
}

/// The first view of `views` for Service `key` of frontend kind `kind` that `pred` accepts.
fn find_view<'v>(
    views: &'v [serde_json::Value],
    key: &str,
    kind: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Option<&'v serde_json::Value> {
    views.iter().find(|v| v["service"] == key && v["kind"] == kind && pred(v))
}

fn view_ip(v: &serde_json::Value) -> Option<Ipv4Addr> {
    v["ip"].as_str()?.parse().ok()
}

/// The address a target stands for, now (see the module contract).
fn resolve(t: &Target, st: &State, sw: &SwitchServices) -> anyhow::Result<SocketAddrV4> {
    let proto = match t.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let port_label = format!("{}/{proto}", t.port);
    let addr = match &t.dest {
        Dest::Ip(ip) => SocketAddrV4::new(*ip, t.port),
        Dest::Pod { namespace, name } => match st.pods.get(&format!("{namespace}/{name}")) {
            Some(p) => SocketAddrV4::new(p.ip, t.port),
            None => SocketAddrV4::new(
                apiview::pod_ip(namespace, name).ok_or_else(|| {
                    anyhow!("no Pod {namespace}/{name} in the lab (and no podIP for it in the manifests)")
                })?,
                t.port,
            ),
        },
        Dest::Service { namespace, name } => {
            let key = format!("{namespace}/{name}");
            let ip = match apiview::service_cluster_ip(namespace, name) {
                Some(ip) => ip,
                None => match sw.views() {
                    Ok(views) => find_view(views, &key, "clusterip", |_| true).and_then(view_ip).ok_or_else(|| {
                        anyhow!("Service {key} has no clusterIP in the manifests and the lab's switch serves none for it")
                    })?,
                    Err(why) => bail!("Service {key} has no clusterIP in the manifests and {why}"),
                },
            };
            SocketAddrV4::new(ip, t.port)
        }
        Dest::NodePort { namespace, name } => {
            let key = format!("{namespace}/{name}");
            let node_port = match sw.views() {
                Ok(views) => {
                    let service_port = find_view(views, &key, "clusterip", |v| v["port"] == t.port && v["protocol"] == proto)
                        .ok_or_else(|| anyhow!("the lab's switch serves no port {port_label} of Service {key}"))?;
                    let np = find_view(views, &key, "nodeport", |v| {
                        v["name"] == service_port["name"] && v["protocol"] == proto
                    })
                    .ok_or_else(|| anyhow!("port {port_label} of Service {key} has no NodePort in the lab's switch"))?;
                    np["port"].as_u64().and_then(|p| u16::try_from(p).ok()).ok_or_else(|| {
                        anyhow!("the lab's switch gave port {} for the NodePort of Service {key}", np["port"])
                    })?
                }
                Err(why) => apiview::service_node_port(namespace, name, t.port, proto).ok_or_else(|| {
                    anyhow!("port {port_label} of Service {key} has no nodePort in the manifests and {why}")
                })?,
            };
            SocketAddrV4::new(st.node.internal_ip, node_port)
        }
        Dest::LoadBalancer { namespace, name } => {
            let key = format!("{namespace}/{name}");
            let ip = match sw.views() {
                Ok(views) => {
                    find_view(views, &key, "loadbalancer", |v| v["port"] == t.port && v["protocol"] == proto)
                        .and_then(view_ip)
                        .ok_or_else(|| {
                            anyhow!("the lab's switch serves no LoadBalancer IP for port {port_label} of Service {key}")
                        })?
                }
                Err(why) => apiview::service_lb_ip(namespace, name).ok_or_else(|| {
                    anyhow!("Service {key} has no status.loadBalancer.ingress IP in the manifests and {why}")
                })?,
            };
            SocketAddrV4::new(ip, t.port)
        }
    };
    Ok(addr)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Connected,
    Refused,
    Timeout,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub outcome: Outcome,
    /// The probe socket's own address.
    pub source: Option<SocketAddr>,
    /// The answer line: (answering pod, client address it saw).
    pub answer: Option<(String, String)>,
}

/// Result of an error reported by the kernel for a probe socket.
fn classify(e: Errno) -> Outcome {
    match e {
        Errno::ECONNREFUSED
        | Errno::EHOSTUNREACH
        | Errno::ENETUNREACH
        | Errno::EHOSTDOWN
        | Errno::ENETDOWN
        | Errno::ECONNRESET
        | Errno::EACCES
        | Errno::EPERM => Outcome::Refused,
        _ => Outcome::Timeout,
    }
}

fn io_classify(e: &std::io::Error) -> Outcome {
    e.raw_os_error().map_or(Outcome::Timeout, |n| classify(Errno::from_raw(n)))
}

fn parse_answer(bytes: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?.trim();
    let (pod, client) = line.split_once(' ')?;
    Some((pod.to_string(), client.to_string()))
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// One TCP probe from the calling thread's namespace.
pub fn probe_tcp(dst: SocketAddrV4, timeout: Duration) -> anyhow::Result<ProbeResult> {
    let deadline = Instant::now() + timeout;
    let fd =
        socket::socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
            .context("cannot create a TCP socket")?;
    let started = socket::connect(fd.as_raw_fd(), &SockaddrIn::from(dst));
    let source = socket::getsockname::<SockaddrIn>(fd.as_raw_fd()).ok().map(|a| SocketAddr::V4(SocketAddrV4::from(a)));
    let result = |outcome, answer| Ok(ProbeResult { outcome, source, answer });
    match started {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return result(classify(e), None),
    }
    loop {
        let ms = remaining(deadline).as_millis().min(u16::MAX as u128) as u16;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => return result(Outcome::Timeout, None),
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => bail!("poll: {e}"),
        }
    }
    let err = socket::getsockopt(&fd, sockopt::SocketError).context("getsockopt(SO_ERROR)")?;
    if err != 0 {
        return result(classify(Errno::from_raw(err)), None);
    }
    let mut stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.contains(&b'\n') {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    result(Outcome::Connected, parse_answer(&buf))
}

/// One UDP probe from the calling thread's namespace.
pub fn probe_udp(dst: SocketAddrV4, timeout: Duration) -> anyhow::Result<ProbeResult> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("cannot create a UDP socket")?;
    if let Err(e) = s.connect(dst) {
        return Ok(ProbeResult { outcome: io_classify(&e), source: None, answer: None });
    }
    let source = s.local_addr().ok();
    let result = |outcome, answer| Ok(ProbeResult { outcome, source, answer });
    if let Err(e) = s.send(b"podswitch lab probe\n") {
        return result(io_classify(&e), None);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return result(Outcome::Timeout, None);
        }
        s.set_read_timeout(Some(left))?;
        match s.recv(&mut buf) {
            Ok(n) => return result(Outcome::Connected, parse_answer(&buf[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return result(Outcome::Timeout, None)
            }
            Err(e) => return result(io_classify(&e), None),
        }
    }
}

/// Waits until the lab and its switch are in sync with the manifest directory; returns the
/// state then in force.
pub fn wait_in_sync(timeout: Duration) -> anyhow::Result<State> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = State::load_required()?;
        let current = manifests::dir_digest(&st.manifests)
            .with_context(|| format!("cannot read the lab's manifest directory {}", st.manifests.display()))?;
        let reason = if state::read_synced().as_deref() != Some(current.as_str()) {
            if let Some((d, msg)) = state::read_sync_error() {
                if d == current {
                    bail!("the lab cannot apply the current manifests of {}: {msg}", st.manifests.display());
                }
            }
            if !st.supervisor.is_some_and(|p| p.alive()) {
                bail!(
                    "the lab's supervisor is not running, so the edits of {} are not applied (see {})",
                    st.manifests.display(),
                    state::logs_dir().join("supervisor.log").display()
                );
            }
            Some(format!("the lab has not applied the current content of {} yet", st.manifests.display()))
        } else {
            let several = !st.more_nodes.is_empty();
            let mut reason = None;
            for n in st.node_switches() {
                let of = if several { format!(" of node {}", n.name) } else { String::new() };
                match n.process {
                    Some(p) if !p.alive() => bail!(
                        "the lab's switch{of} (pid {}) has exited (see {}); `podswitch lab switch start` restarts it",
                        p.pid,
                        n.log.display()
                    ),
                    Some(_) if reason.is_none() => {
                        reason = switch::sync_status(&st, &n.control_socket).map(|r| format!("the switch{of} is not in sync: {r}"));
                    }
                    _ => {}
                }
            }
            reason
        };
        match reason {
            None => return Ok(st),
            Some(r) if Instant::now() >= deadline => bail!("not probing: after {} s, {r}", timeout.as_secs()),
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn run(a: ProbeArgs) -> anyhow::Result<i32> {
    super::require_root("probe")?;
    let targets = a.to.iter().map(|t| parse_target(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let loaded = State::load().ok().flatten();
    for f in &a.from {
        target_netns(f, loaded.as_ref())?;
    }
    let st = wait_in_sync(Duration::from_secs(a.sync_timeout))?;
    let sources: Vec<String> = if a.from.is_empty() { st.pods.keys().cloned().collect() } else { a.from.clone() };
    if sources.is_empty() {
        bail!("the lab has no pods to probe from (use --from node)");
    }
    let mut from_netns = Vec::new();
    for f in &sources {
        let ns = target_netns(f, Some(&st))?;
        if !is_node(f, &st) && f != "external" && f != "underlay" && !st.pods.contains_key(f) {
            bail!("no Pod {f} in the lab");
        }
        if !netns::exists(&ns) {
            bail!("no network namespace {ns} for source {f}");
        }
        from_netns.push(ns);
    }
    let sw = SwitchServices::new(&st);
    let addrs = targets.iter().map(|t| resolve(t, &st, &sw)).collect::<anyhow::Result<Vec<_>>>()?;
    let timeout = Duration::from_millis(a.timeout_ms);
    if st.switch.process.is_none() {
        eprintln!("note: the lab's switch is not running; probes cannot cross it");
    }
    let results: Vec<ProbeResult> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for ns in &from_netns {
            for (t, addr) in targets.iter().zip(&addrs) {
                let path = netns::netns_path(ns);
                let (proto, addr) = (t.proto, *addr);
                handles.push(s.spawn(move || -> anyhow::Result<ProbeResult> {
                    netns::enter(Path::new(&path))?;
                    match proto {
                        Proto::Tcp => probe_tcp(addr, timeout),
                        Proto::Udp => probe_udp(addr, timeout),
                    }
                }));
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a probe thread panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut rows = Vec::new();
    let mut i = 0;
    for f in &sources {
        let mut row = Vec::new();
        for t in &targets {
            row.push((f, t, &results[i]));
            i += 1;
        }
        rows.push(row);
    }
    if a.json {
        let list: Vec<_> = rows
            .iter()
            .flat_map(|row| row.iter().zip(&addrs))
            .map(|((f, t, r), addr)| {
                let connected = r.outcome == Outcome::Connected;
                json!({
                    "from": f,
                    "to": t.text,
                    "address": addr.to_string(),
                    "result": r.outcome.as_str(),
                    "answered_by": r.answer.as_ref().filter(|_| connected).map(|a| &a.0),
                    "source": r.source.map(|s| s.to_string()),
                    "seen_client": r.answer.as_ref().filter(|_| connected).map(|a| &a.1),
                })
            })
            .collect();
        println!("{}", json!({ "results": list }));
    } else {
        print_matrix(&st, &sources, &targets, &rows);
    }
    Ok(0)
}

fn cell(st: &State, t: &Target, r: &ProbeResult) -> String {
    match (r.outcome, &r.answer) {
        (Outcome::Connected, Some((by, _))) if t.pod(st).as_deref() == Some(by.as_str()) => "ok".into(),
        (Outcome::Connected, Some((by, _))) => format!("ok({by})"),
        (Outcome::Connected, None) => "ok(no answer)".into(),
        (o, _) => o.as_str().into(),
    }
}

fn print_matrix(st: &State, sources: &[String], targets: &[Target], rows: &[Vec<(&String, &Target, &ProbeResult)>]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(|(_, t, res)| cell(st, t, res)).collect()).collect();
    let corner = "FROM \\ TO";
    let w0 = sources.iter().map(std::string::String::len).chain([corner.len()]).max().unwrap_or(4);
    let widths: Vec<usize> = targets
        .iter()
        .enumerate()
        .map(|(j, t)| cells.iter().map(|r| r[j].len()).chain([t.text.len()]).max().unwrap_or(2))
        .collect();
    let mut line = format!("{corner:w0$}");
    for (t, w) in targets.iter().zip(&widths) {
        line.push_str(&format!("  {:w$}", t.text));
    }
    println!("{}", line.trim_end());
    for (s, r) in sources.iter().zip(&cells) {
        let mut line = format!("{s:w0$}");
        for (c, w) in r.iter().zip(&widths) {
            line.push_str(&format!("  {c:w$}"));
        }
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = parse_target("pod/x/b:80/udp").unwrap();
        assert_eq!(t.dest, Dest::Pod { namespace: "x".into(), name: "b".into() });
        assert_eq!((t.port, t.proto), (80, Proto::Udp));
        let t = parse_target("svc/y/web:8080").unwrap();
        assert_eq!(t.dest, Dest::Service { namespace: "y".into(), name: "web".into() });
        assert_eq!((t.port, t.proto), (8080, Proto::Tcp));
        let t = parse_target("nodeport/y/api-lb:80/udp").unwrap();
        assert_eq!(t.dest, Dest::NodePort { namespace: "y".into(), name: "api-lb".into() });
        assert_eq!((t.port, t.proto), (80, Proto::Udp));
        let t = parse_target("lb/y/api-lb:80").unwrap();
        assert_eq!(t.dest, Dest::LoadBalancer { namespace: "y".into(), name: "api-lb".into() });
        assert_eq!((t.port, t.proto), (80, Proto::Tcp));
        let t = parse_target("10.244.0.3:81/tcp").unwrap();
        assert_eq!(t.dest, Dest::Ip("10.244.0.3".parse().unwrap()));
        for bad in
            ["pod/x:80", "x/a:80", "10.0.0.1", "10.0.0.1:0", "pod/x/a:80/sctp", "svc//a:1", "nodeport/x:80", "lb/x/a/b:80"]
        {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_parse() {
        assert_eq!(parse_answer(b"x/b 10.244.0.11:40312\n"), Some(("x/b".into(), "10.244.0.11:40312".into())));
        assert_eq!(parse_answer(b""), None);
    }
}
