//! `podswitch run`: the switch process.
//!
//! Contract:
//! - Start-up reads the manifests, creates the node's host port, starts the pinned workers,
//!   attaches the host port first and then every local pod's host-side veth, publishes the
//!   tables and prints the XDP and copy mode of every port. Any failure there prints one line
//!   and exits non-zero, leaving nothing behind.
//! - Then it follows the manifest directory (inotify, and a 1 s re-check): a changed directory
//!   is re-read whole; a bad file is reported (log and `show status`) while the tables in force
//!   stay in force. Pod ports whose interface is missing are retried every second and listed
//!   as pending.
//! - Every view is applied incrementally: pods ([`crate::pods`]), Services and NetworkPolicies
//!   are read again only where the view changed (by its list of changed keys when it has one,
//!   else by resourceVersion or content); the policy compile is skipped when nothing it reads
//!   changed, and the published tables share every unchanged part with the previous ones.
//! - SIGTERM/SIGINT detach every port, stop the workers and delete the host port.
pub mod affinity;
pub mod flows;
pub mod host_port;
pub mod show_handler;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context};
use notify::Watcher;
use switch::afxdp::frames::UmemSpec;
use switch::afxdp::iface;
use switch::afxdp::socket::CopyPolicy;
use switch::afxdp::xdp::XdpMode;
use switch::dataplane::{Dataplane, DataplaneConfig};
use switch::tables::{PortId, Tables};


use crate::compile::{self, Attached, DesiredPort};
use crate::ctl;
use crate::kube_source::{self, KubeArgs, KubeSource, ObjectSource};
use crate::metrics::{self, MetricsAddr, MetricsArgs, MetricsSnapshot};
use crate::manifests::{self, Manifests};
use crate::model::{self, NodeInfo};
use crate::naming;
use crate::pods::PodCache;
use crate::policy::{self as netpol, CompiledPolicy, PolicyInputs, PolicyState};
use crate::services::{self, CompiledServices, ServiceInputs, ServiceState};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum XdpModeArg {
    Native,
    Generic,
}

/// Run the switch on this node.
#[derive(Debug, clap::Args)]
#[command(long_about = "Run the switch: attach AF_XDP sockets to the node's host port and to the \
host-side veth of every local pod, and route pod traffic in userspace.\n\n\
Pods, Namespaces and the Node come from a directory of Kubernetes YAML (--manifests), re-read \
whenever it changes. `podswitch show ...` talks to the running switch over --control-socket.")]
pub struct RunArgs {
    /// Directory of Kubernetes manifests (Namespace, Pod, Node; several documents per file allowed).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Which Node of the manifests this is (needed when they hold several).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Unix socket for `podswitch show` (mode 0600: root only).
    #[arg(long, value_name = "PATH", default_value = naming::DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Cores to run one pinned poll-mode worker each on, e.g. `2,3`. Every port needs one queue per worker.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "0")]
    pub cores: Vec<usize>,
    /// Never let idle workers sleep (lowest latency, 100% of each worker core).
    #[arg(long)]
    pub busy_poll: bool,
    /// Fail instead of running a port in AF_XDP copy mode.
    #[arg(long)]
    pub require_zerocopy: bool,
    /// Force an XDP mode; by default native, and generic only where native is refused.
    #[arg(long, value_enum, value_name = "MODE")]
    pub xdp_mode: Option<XdpModeArg>,
    /// UMEM frames per worker (2 KiB each).
    #[arg(long, default_value_t = 16384)]
    pub frames: u32,
    /// Connections the connection table holds (fixed at start; about 101 bytes each). When
    /// full, new connections are refused (drop reason conntrack_full) and established ones go on.
    #[arg(long, default_value_t = 262_144)]
    pub conntrack_size: u32,
    /// The node's uplink interface: traffic from clients outside the cluster (NodePorts,
    /// LoadBalancer and external IPs) arrives here, and whatever has no more specific route
    /// leaves here. The switch answers ARP for the node's InternalIP on it.
    #[arg(long, value_name = "IF", requires = "uplink_gateway_mac")]
    pub uplink: Option<String>,
    /// MAC of the next hop behind --uplink (the router; in the lab, the `external` host).
    #[arg(long, value_name = "MAC", requires = "uplink")]
    pub uplink_gateway_mac: Option<String>,
    /// Start even if some pods' interfaces do not exist yet (they are retried every second).
    #[arg(long)]
    pub allow_missing_interfaces: bool,
}

pub(crate) struct Switch {
    pub dp: Dataplane,
    pub uplink: Option<compile::Uplink>,
    pub node: NodeInfo,
    host_stack_mac: [u8; 6],
    pub dir: PathBuf,
    pub desired: Vec<DesiredPort>,
    pub problems: Vec<String>,
    /// Attached ports by key, with their interface.
    pub attached: BTreeMap<String, (Attached, String)>,
    pub pending: BTreeMap<String, String>,
    pub applied_digest: String,
    pub last_error: Option<String>,
    pub version: u64,
    pub ignored_kinds: Vec<String>,
    pub started: Instant,
    pub svc_state: ServiceState,
    /// The Services as last compiled (what `show services` reports).
    pub services: Option<CompiledServices>,
    pub flows: flows::FlowHistory,
    /// The API source's status, when the objects come from the Kubernetes API.
    pub kube: Option<kube_source::StatusHandle>,
    /// Views applied, views refused, and the last apply's duration and end.
    pub syncs: u64,
    pub sync_errors: u64,
    pub last_sync: Option<(Duration, SystemTime)>,
    pub policy_state: PolicyState,
    /// NetworkPolicies as last compiled (what `show policies` reports).
    pub policy: Option<CompiledPolicy>,
    /// Every pod of the view, re-read where it changed.
    pub pods: PodCache,
    /// The pod generation `desired` and `pod_problems` were made from.
    pub desired_from: Option<u64>,
    /// Sentences about pods: unreadable ones, and those `desired` cannot wire.
    pub pod_problems: Vec<String>,
}

impl Switch {
    fn free_id(&self) -> PortId {
        let used: BTreeSet<PortId> = self.attached.values().map(|(a, _)| a.id).collect();
        (1..).find(|id| !used.contains(id)).expect("fewer ports than ids")
    }

    fn tables(&mut self, keep: impl Fn(&str) -> bool) -> Tables {
        self.version += 1;
        let attached: BTreeMap<String, Attached> =
            self.attached.iter().filter(|(k, _)| keep(k)).map(|(k, (a, _))| (k.clone(), *a)).collect();
        let mut t =
            compile::build_tables(self.version, &self.node, &self.desired, &attached, self.host_stack_mac, self.uplink.as_ref());
        if let Some(c) = &self.services {
            t.services = c.tables.clone();
        }
        if let Some(p) = &self.policy {
            t.policy = p.tables.clone();
        }
        t
    }

    /// Takes in a freshly read manifest view.
    fn apply(&mut self, m: &Manifests) -> Result<(), String> {
        let t0 = Instant::now();
        let node = model::node_info(m, Some(&self.node.name))?;
        if node != self.node {
            return Err(format!(
                "the Node object changed ({:?} -> {:?}); restart the switch to apply a new pod CIDR or InternalIP",
                self.node, node
            ));
        }
        // The pods step: only the pods that changed are read again, and the ports follow
        // only when some pod did.
        self.pods.update(m);
        if self.desired_from != Some(self.pods.generation()) {
            let local = self.pods.local_pods(&self.node)?;
            let (desired, mut problems) = compile::desired_ports(&self.node, &local, self.uplink.as_ref());
            problems.extend(self.pods.problems());
            self.desired = desired;
            self.pod_problems = problems;
            self.desired_from = Some(self.pods.generation());
        }
        let all_pods = self.pods.all();
        let compiled = services::compile_services(&ServiceInputs { manifests: m, node: &self.node, all_pods }, &mut self.svc_state);
        let inputs = PolicyInputs { manifests: m, node: &self.node, all_pods };
        if let Some(c) = netpol::compile_policy_unless_unchanged(&inputs, self.pods.generation(), &mut self.policy_state) {
            self.policy = Some(c);
        }
        let mut problems = self.pod_problems.clone();
        problems.extend(compiled.problems.iter().cloned());
        problems.extend(self.policy.iter().flat_map(|p| p.problems.iter().cloned()));
        for p in &problems {
            tracing::warn!("{p}");
        }
        let removed = self.svc_state.removed_endpoints().to_vec();
        self.problems = problems;
        self.ignored_kinds = m.ignored.clone();
        self.services = Some(compiled);
        self.reconcile();
        // The new tables are in force: no new flow can pick a removed endpoint any more, so its
        // UDP flows can go now rather than linger until they time out.
        if !removed.is_empty() {
            let n = self.dp.flush_udp_endpoints(removed.clone());
            tracing::info!(endpoints = removed.len(), flushed = n, "UDP connections of removed endpoints flushed");
        }
        self.applied_digest = m.digest.clone();
        self.syncs += 1;
        self.last_sync = Some((t0.elapsed(), SystemTime::now()));
        Ok(())
    }

    /// Brings attached ports in line with the desired ones; publishes the tables.
    /// Reconciles again when some port waits for its interface or an attached one's interface
    /// went away (nothing else changed).
    fn retry_pending(&mut self) {
        if !self.pending.is_empty() || self.attached.values().any(|(_, i)| !iface::exists(i)) {
            self.reconcile();
        }
    }

    fn reconcile(&mut self) {
        let wanted: BTreeMap<&str, &DesiredPort> = self.desired.iter().map(|d| (d.key.as_str(), d)).collect();
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(k, (_, ifname))| {
                wanted.get(k.as_str()).is_none_or(|d| &d.ifname != ifname) || !iface::exists(ifname)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !gone.is_empty() {
            // Routes to these ports go first, then their sockets.
            let t = self.tables(|k| !gone.iter().any(|g| g == k));
            self.dp.publish(t);
            for k in &gone {
                let (a, ifname) = self.attached.remove(k).expect("listed above");
                if let Err(e) = self.dp.detach_port(a.id) {
                    tracing::error!(port = %k, "detaching {ifname}: {e}");
                }
                tracing::info!(port = %k, interface = %ifname, "port detached");
            }
        }
        self.pending.clear();
        for d in &self.desired {
            if self.attached.contains_key(&d.key) {
                continue;
            }
            if !iface::exists(&d.ifname) {
                self.pending.insert(d.key.clone(), format!("interface {} does not exist (yet)", d.ifname));
                continue;
            }
            let id = if d.key == compile::HOST_KEY { 0 } else { self.free_id() };
            match iface::mac(&d.ifname).map_err(|e| e.to_string()).and_then(|mac| {
                self.dp.attach_port(id, &d.ifname).map(|r| (mac, r)).map_err(|e| e.to_string())
            }) {
                Ok((mac, r)) => {
                    println!(
                        "port {} ({}): XDP {}, {} mode, {} queue(s){}",
                        d.ifname,
                        d.key,
                        r.xdp_mode.as_str(),
                        if r.zerocopy { "zero-copy" } else { "copy" },
                        r.queues.len(),
                        r.native_refused.as_deref().map(|w| format!(" (native refused: {w})")).unwrap_or_default()
                    );
                    self.attached.insert(d.key.clone(), (Attached { id, mac }, d.ifname.clone()));
                }
                Err(e) => {
                    tracing::warn!(port = %d.key, "cannot attach {}: {e}", d.ifname);
                    self.pending.insert(d.key.clone(), e);
                }
            }
        }
        let t = self.tables(|_| true);
        self.dp.publish(t);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODSWITCH_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_writer(std::io::stderr).try_init();
}

pub fn main(args: RunArgs) -> anyhow::Result<i32> {
    init_logging();
    if !nix::unistd::geteuid().is_root() {
        return Err(anyhow!("`podswitch run` needs root (it loads XDP programs and binds AF_XDP sockets)"));
    }
    // Before any thread exists: every thread made from here on stays off the workers' cores.
    let control_cores = affinity::keep_off(&args.cores).map_err(|e| anyhow!("keeping control threads off the worker cores: {e}"))?;
    let (m, mut kube) = match args.kube.source(args.manifests.as_deref()).map_err(|e| anyhow!(e))? {
        ObjectSource::Directory(dir) => (manifests::load_dir(&dir).map_err(|e| anyhow!("{e}"))?, None),
        ObjectSource::Api(cfg) => {
            let mut src = kube_source::start(*cfg).map_err(|e| anyhow!("{e}"))?;
            let m = first_api_view(&mut src);
            (m, Some(src))
        }
    };
    let node = model::node_info(&m, args.node_name.as_deref()).map_err(|e| anyhow!("{e}"))?;
    let pods = model::local_pods(&m, &node).map_err(|e| anyhow!("{e}"))?;
    let uplink = match (&args.uplink, &args.uplink_gateway_mac) {
        (Some(ifname), Some(mac)) => {
            let gateway_mac = iface::parse_mac(mac).ok_or_else(|| anyhow!("--uplink-gateway-mac {mac:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
            if !iface::exists(ifname) {
                return Err(anyhow!("uplink interface {ifname} does not exist in this network namespace"));
            }
            Some(compile::Uplink { ifname: ifname.clone(), gateway_mac })
        }
        _ => None,
    };
    let (desired, _) = compile::desired_ports(&node, &pods, uplink.as_ref());
    if !args.allow_missing_interfaces {
        if let Some(d) = desired.iter().find(|d| d.kind != switch::tables::PortKind::Host && !iface::exists(&d.ifname)) {
            return Err(anyhow!(
                "interface {} of pod {} does not exist in this network namespace (pass --allow-missing-interfaces to wait for it)",
                d.ifname,
                d.key
            ));
        }
    }
    let listener = ctl::server::bind(&args.control_socket).map_err(|e| anyhow!(e))?;
    let cfg = DataplaneConfig {
        cores: args.cores.clone(),
        busy_poll: args.busy_poll,
        umem: UmemSpec { frames: args.frames, ..UmemSpec::default() },
        copy_policy: if args.require_zerocopy { CopyPolicy::RequireZeroCopy } else { CopyPolicy::PreferZeroCopy },
        xdp_mode: args.xdp_mode.map(|m| match m {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        }),
        conntrack_capacity: args.conntrack_size,
        allowed_cores: Some(control_cores.allowed.clone()),
        ..DataplaneConfig::default()
    };
    let host_stack_mac = host_port::ensure(&node, cfg.cores.len() as u32, &crate::services::ServiceConfig::default().service_cidrs).map_err(|e| anyhow!(e))?;
    let dp = match Dataplane::start(cfg, Tables::new(naming::GATEWAY_IP)) {
        Ok(dp) => dp,
        Err(e) => {
            host_port::remove();
            let _ = std::fs::remove_file(&args.control_socket);
            return Err(anyhow!("{e}"));
        }
    };
    let mut sw = Switch {
        dp,
        uplink,
        node,
        host_stack_mac,
        dir: args.manifests.clone().unwrap_or_default(),
        desired: Vec::new(),
        problems: Vec::new(),
        attached: BTreeMap::new(),
        pending: BTreeMap::new(),
        applied_digest: String::new(),
        last_error: None,
        version: 0,
        ignored_kinds: Vec::new(),
        started: Instant::now(),
        // API objects change resourceVersion with every change: the Service compiler may trust it.
        svc_state: ServiceState::default().with_resource_versions(kube.is_some()),
        services: None,
        flows: flows::FlowHistory::default(),
        kube: kube.as_ref().map(KubeSource::status_handle),
        syncs: 0,
        sync_errors: 0,
        last_sync: None,
        policy_state: PolicyState::default(),
        policy: None,
        pods: PodCache::default().with_resource_versions(kube.is_some()),
        desired_from: None,
        pod_problems: Vec::new(),
    };
    if let Err(e) = sw.apply(&m) {
        sw.dp.stop();
        host_port::remove();
        let _ = std::fs::remove_file(&args.control_socket);
        return Err(anyhow!(e));
    }
    let fatal = sw
        .pending
        .iter()
        .find(|(k, _)| k.as_str() == compile::HOST_KEY || k.as_str() == compile::UPLINK_KEY || !args.allow_missing_interfaces)
        .map(|(k, e)| format!("cannot attach port {k}: {e}"));
    if let Some(e) = fatal {
        sw.dp.stop();
        host_port::remove();
        let _ = std::fs::remove_file(&args.control_socket);
        return Err(anyhow!(e));
    }
    println!(
        "podswitch running: node {} (pod CIDR {}, InternalIP {}), {} port(s), workers on cores {:?}{}; {}",
        sw.node.name,
        sw.node.pod_cidr,
        sw.node.internal_ip,
        sw.attached.len(),
        args.cores,
        if args.busy_poll { ", busy polling" } else { "" },
        match &control_cores.control {
            Some(c) => format!("control threads on cores {c:?}"),
            None => "control threads share the workers' cores (no other core is allowed)".to_string(),
        }
    );
    let sw = Arc::new(Mutex::new(sw));
    let _metrics = match args.metrics.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::At(addr) => {
            let provider: metrics::Provider = {
                let sw = Arc::clone(&sw);
                Arc::new(move || metrics_snapshot(&sw.lock().expect("switch state lock")))
            };
            match metrics::serve(addr, provider) {
                Ok(srv) => Some(srv),
                Err(e) => {
                    shutdown(&sw, &args);
                    return Err(anyhow!("--metrics-addr {addr}: {e}"));
                }
            }
        }
    };
    ctl::server::serve(listener, args.control_socket.clone(), show_handler::handler(Arc::clone(&sw)));

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    // The verdict log collector.
    {
        let sw = Arc::clone(&sw);
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("podswitch-flows".into())
            .spawn(move || {
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let Ok(mut s) = sw.lock() else { return };
                    s.dp.drain_flows(&mut buf);
                    let recs = std::mem::take(&mut buf);
                    s.flows.push_all(recs);
                }
            })
            .context("starting the verdict log collector")?;
    }
    let mut failed_digest = String::new();
    if let Some(src) = &mut kube {
        while !stop.load(Ordering::Relaxed) {
            match src.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => {
                    let mut s = sw.lock().expect("switch state lock");
                    match s.apply(m) {
                        Ok(()) => {
                            s.last_error = None;
                            failed_digest.clear();
                            tracing::info!(digest = %s.applied_digest, ports = s.attached.len(), pending = s.pending.len(), "Kubernetes API view applied");
                        }
                        Err(e) => {
                            drop(s);
                            report_error(&sw, &mut failed_digest, &m.digest, e);
                        }
                    }
                }
                Err(_) => {
                    // No new view; retry pending ports.
                    sw.lock().expect("switch state lock").retry_pending();
                }
            }
        }
        shutdown(&sw, &args);
        return Ok(0);
    }
    let dir = args.manifests.clone().expect("the directory source");
    let (ev_tx, ev_rx) = crossbeam::channel::unbounded();
    let mut watcher = notify::recommended_watcher(move |_res| {
        let _ = ev_tx.send(());
    })
    .context("creating the manifest watcher")?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    // The directory's stat signature when it was last digested: while it stays the same the
    // (large) directory is not read and hashed again, except every FULL_DIGEST_EVERY.
    const FULL_DIGEST_EVERY: Duration = Duration::from_secs(10);
    let mut digested: Option<(manifests::DirSignature, std::time::Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        let _ = ev_rx.recv_timeout(Duration::from_millis(500));
        // Let a burst of file events settle before reading.
        std::thread::sleep(Duration::from_millis(20));
        while ev_rx.try_recv().is_ok() {}
        let signature = manifests::dir_signature(&dir).ok();
        if let (Some(sig), Some((last, at))) = (&signature, &digested) {
            if sig == last && at.elapsed() < FULL_DIGEST_EVERY {
                sw.lock().expect("switch state lock").retry_pending();
                continue;
            }
        }
        digested = signature.map(|sig| (sig, std::time::Instant::now()));
        let digest = match manifests::dir_digest(&dir) {
            Ok(d) => d,
            Err(e) => {
                report_error(&sw, &mut failed_digest, "unreadable", e.to_string());
                continue;
            }
        };
        let mut s = sw.lock().expect("switch state lock");
        if digest == s.applied_digest && !failed_digest.is_empty() {
            // A bad edit was undone: what is in force is what the directory says again.
            s.last_error = None;
            failed_digest.clear();
        }
        if digest == s.applied_digest || digest == failed_digest {
            // Nothing new; retry pending ports.
            s.retry_pending();
            continue;
        }
        match manifests::load_dir(&dir).map_err(|e| e.to_string()).and_then(|m| s.apply(&m)) {
            Ok(()) => {
                s.last_error = None;
                failed_digest.clear();
                tracing::info!(digest = %s.applied_digest, ports = s.attached.len(), pending = s.pending.len(), "manifests applied");
            }
            Err(e) => {
                drop(s);
                report_error(&sw, &mut failed_digest, &digest, e);
            }
        }
    }
    shutdown(&sw, &args);
    Ok(0)
}

fn shutdown(sw: &Arc<Mutex<Switch>>, args: &RunArgs) {
    tracing::info!("stopping");
    let mut s = sw.lock().expect("switch state lock");
    s.dp.stop();
    s.attached.clear();
    drop(s);
    host_port::remove();
    let _ = std::fs::remove_file(&args.control_socket);
}

/// Waits for the API source's first complete view, saying every 5 s what it waits for; a copy
/// of it (the source keeps its own, which later updates change).
fn first_api_view(src: &mut KubeSource) -> Manifests {
    println!("podswitch: watching the Kubernetes API at {}", src.status().server);
    loop {
        if let Ok(m) = src.recv_timeout(Duration::from_secs(5)) {
            return m.clone();
        }
        let st = src.status();
        let waiting: Vec<&str> = st.kinds.iter().filter(|(_, k)| !k.listed || k.listing || !k.connected).map(|(n, _)| n.as_str()).collect();
        tracing::warn!(
            connected = st.connected,
            last_error = st.last_error.as_deref().unwrap_or("-"),
            "waiting for a complete list of {}",
            waiting.join(", ")
        );
    }
}

/// What `/metrics` reports, read from the switch state.
fn metrics_snapshot(s: &Switch) -> MetricsSnapshot {
    use std::sync::atomic::Ordering::Relaxed;
    let t = s.dp.tables();
    let ct = s.dp.conntrack();
    let key_of: BTreeMap<PortId, &str> = s.attached.iter().map(|(k, (a, _))| (a.id, k.as_str())).collect();
    MetricsSnapshot {
        ports: s
            .dp
            .reports()
            .into_iter()
            .map(|r| metrics::PortMetrics {
                port: key_of.get(&r.id).map(|k| k.to_string()).unwrap_or_else(|| r.name.clone()),
                interface: r.name,
                rx_packets: r.totals.rx_packets,
                rx_bytes: r.totals.rx_bytes,
                rx_dropped: r.totals.rx_dropped,
                tx_packets: r.totals.tx_packets,
                tx_bytes: r.totals.tx_bytes,
                tx_dropped: r.totals.tx_dropped,
                kernel_lost: r.kernel.lost(),
            })
            .collect(),
        workers: worker_metrics(&s.dp),
        drops: s.dp.drops().into_iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
        conntrack: metrics::ConntrackMetrics {
            entries: ct.live() as u64,
            capacity: ct.capacity() as u64,
            insert_failures: ct.counters.insert_failed_full.load(Relaxed) + ct.counters.insert_failed_slot.load(Relaxed),
        },
        tables: metrics::TableSizes {
            routes: t.routes.len() as u64,
            frontends: t.services.frontends.len() as u64,
            backends: t.services.frontends.iter().map(|f| (f.internal.backends.len() + f.external.backends.len()) as u64).sum(),
            policy_pods: t.policy.pods.len() as u64,
        },
        sync: metrics::SyncMetrics {
            last_duration_seconds: s.last_sync.map(|(d, _)| d.as_secs_f64()),
            last_timestamp_seconds: s.last_sync.and_then(|(_, at)| at.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs_f64()),
            syncs: s.syncs,
            manifest_errors: s.sync_errors,
            api_errors: s.kube.as_ref().map(|k| k.errors()).unwrap_or(0),
            api_connected: s.kube.as_ref().map(|k| k.status().connected),
        },
    }
}

/// Per-worker packet, byte and drop counters for `/metrics`.
pub(crate) fn worker_metrics(dp: &Dataplane) -> Vec<metrics::WorkerMetrics> {
    dp.worker_reports()
        .into_iter()
        .map(|w| metrics::WorkerMetrics {
            worker: w.worker,
            core: w.core,
            rx_packets: w.totals.rx_packets,
            rx_bytes: w.totals.rx_bytes,
            tx_packets: w.totals.tx_packets,
            tx_bytes: w.totals.tx_bytes,
            drops: w.drops.into_iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
        })
        .collect()
}

fn report_error(sw: &Arc<Mutex<Switch>>, failed_digest: &mut String, digest: &str, e: String) {
    if failed_digest != digest {
        tracing::error!("manifests not applied, the tables in force stay: {e}");
    }
    *failed_digest = digest.to_string();
    let mut s = sw.lock().expect("switch state lock");
    s.last_error = Some(e);
    s.sync_errors += 1;
}
