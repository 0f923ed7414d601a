//! Start-up of `podswitch run`: everything the event loop needs, made in order.
//!
//! Contract: [`start`] keeps the control threads off the worker cores, reads the first view
//! (manifest directory or Kubernetes API), checks the uplink and the pods' interfaces, binds
//! the control socket, creates the host port (and the DNAT return rule), starts the workers, applies the first view
//! (attaching the host port first, then the uplink and every local pod's port, the pods the
//! CNI plugin recorded included: they are adopted), then starts
//! the metrics endpoint, the control socket's server, the signal handlers and the verdict log
//! collector. With `--l2-announce` the announcer's thread starts before the first view is
//! applied (it is offered addresses with every publish). The health check server (`/healthz`, `/livez`, the Services' health check ports)
//! starts before the first view is applied. Each thing made is recorded in the returned
//! [`Running`]'s [`Teardown`] as soon as it exists, so a failure at any step (returned as a
//! [`StartError`]) leaves nothing behind, and so does the end of [`Running`].
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use switch::afxdp::frames::UmemSpec;
use switch::afxdp::iface;
use switch::afxdp::socket::CopyPolicy;
use switch::afxdp::xdp::XdpMode;
use switch::dataplane::{Dataplane, DataplaneConfig, DataplaneError};
use switch::tables::{PortKind, Tables};

use super::apply::{self, ApplyError, Switch};
use super::cni_watch::CniWatch;
use super::shared::{Shared, Snapshot};
use super::teardown::Teardown;
use super::watch::{self, DirWatch, WatchError};
use super::{affinity, flows, host_port, metrics_view, show_handler, RunArgs, XdpModeArg};
use crate::compile::{self, Uplink};
use crate::ctl;
use crate::health::{HealthServer, ProxyHealth};
use crate::kube_source::{self, KubeSource, ObjectSource};
use crate::l2announce::kube_leases::KubeLeases;
use crate::l2announce::lease_store::{FileLeases, LeaseStore};
use crate::l2announce::{AnnounceConfig, ArgsError as L2ArgsError, L2Announcer};
use crate::manifests;
use crate::metrics::{self, MetricsAddr};
use crate::model;
use crate::naming;
use crate::neighbours::{NeighbourConfig, NeighbourError, Neighbours};

/// Why `podswitch run` did not start (nothing it made is left behind).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("`podswitch run` needs root (it loads XDP programs and binds AF_XDP sockets)")]
    NotRoot,
    #[error("keeping control threads off the worker cores")]
    Affinity(#[source] affinity::AffinityError),
    /// The object source's own message (bad flags, unreadable directory, kubeconfig, Node).
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("--uplink-gateway-mac {0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    UplinkMac(String),
    #[error("uplink interface {0} does not exist in this network namespace")]
    NoUplink(String),
    #[error(transparent)]
    PodNetwork(#[from] crate::pod_network::PodNetworkError),
    #[error("following the uplink's neighbours: {0}")]
    Neighbours(#[from] NeighbourError),
    #[error(transparent)]
    PortRanges(#[from] super::port_ranges::PortRangeError),
    #[error("interface {ifname} of pod {pod} does not exist in this network namespace (pass --allow-missing-interfaces to wait for it)")]
    MissingInterface { ifname: String, pod: String },
    #[error(transparent)]
    ControlSocket(#[from] ctl::server::ServerError),
    #[error(transparent)]
    HostPort(#[from] host_port::HostPortError),
    #[error("the way back for hostPort connections: {0}")]
    DnatReturn(#[from] super::dnat_return::DnatReturnError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    FirstView(#[from] ApplyError),
    #[error("cannot attach port {port}: {error}")]
    Attach { port: String, error: String },
    #[error("--metrics-addr {addr}")]
    Metrics { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Health(#[from] crate::health::HealthServerError),
    #[error(transparent)]
    L2Args(#[from] L2ArgsError),
    #[error("L2 announcements: {0}")]
    LeaseStore(#[from] crate::l2announce::lease_store::StoreError),
    #[error("L2 announcements: {0}")]
    L2Announcer(#[source] std::io::Error),
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    #[error("starting the verdict log collector")]
    Collector(#[source] std::io::Error),
}

/// Where the views come from after the first.
pub(crate) enum Source {
    Directory(DirWatch),
    Api(Box<KubeSource>),
}

/// A started switch: what the event loop works with. Dropping it tears everything down.
pub(crate) struct Running {
    pub switch: Switch,
    pub source: Source,
    /// Set by SIGTERM and SIGINT.
    pub stop: Arc<AtomicBool>,
    /// The CNI plugin's records.
    pub cni: CniWatch,
    _metrics: Option<metrics::MetricsServer>,
    /// Last: undoes the rest once the fields above are gone.
    _teardown: Teardown,
}

/// Starts the switch (see the module contract).
pub(crate) fn start(args: &RunArgs) -> Result<Running, StartError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(StartError::NotRoot);
    }
    // Before any thread exists: every thread made from here on stays off the workers' cores.
    let control_cores = affinity::keep_off(&args.cores).map_err(StartError::Affinity)?;
    let source_err = |e: &dyn std::fmt::Display| StartError::Source(e.to_string());
    // Checked before anything is made: a bad flag stops the start with nothing to undo.
    let l2_timing = if args.l2.l2_announce { Some(args.l2.timing()?) } else { None };
    let mut api_config = None;
    let (m, source) = match args.kube.source(args.manifests.as_deref()).map_err(|e| source_err(&e))? {
        ObjectSource::Directory(dir) => {
            if args.l2.l2_announce && args.l2.l2_lease_dir.is_none() {
                return Err(L2ArgsError::NoLeaseDir.into());
            }
            let m = manifests::load_dir(&dir).map_err(|e| source_err(&e))?;
            // An edit made before the watch starts is not missed: the first look digests.
            (m, Source::Directory(DirWatch::new(&dir)?))
        }
        ObjectSource::Api(cfg) => {
            api_config = Some((*cfg).clone());
            let mut src = kube_source::start(*cfg).map_err(|e| source_err(&e))?;
            let mut m = watch::first_api_view(&mut src);
            // From the API, this node's own pod CIDR and InternalIP must be the cluster's, never
            // the lab's defaults: wait for the controller-manager and the kubelet to set them.
            if let Some(name) = args.node_name.as_deref() {
                m = watch::until_own_node_complete(
                    m,
                    name,
                    |t| src.recv_timeout(t).ok().cloned(),
                    |why| tracing::warn!("waiting before starting: {why}"),
                );
            }
            (m, Source::Api(Box::new(src)))
        }
    };
    let node = model::node_info(&m, args.node_name.as_deref()).map_err(|e| source_err(&e))?;
    let pods = model::local_pods(&m, &node).map_err(|e| source_err(&e))?;
    let pod_network = args.pod_network()?;
    let uplink = match &args.uplink {
        Some(ifname) => {
            let gateway_mac = match &args.uplink_gateway_mac {
                Some(mac) => Some(iface::parse_mac(mac).ok_or_else(|| StartError::UplinkMac(mac.clone()))?),
                None => None,
            };
            if !iface::exists(ifname) {
                return Err(StartError::NoUplink(ifname.clone()));
            }
            // The uplink stays the node's: its kernel's own connections must keep their replies.
            super::port_ranges::check()?;
            let mtu = iface::mtu(ifname).map_err(|_| StartError::NoUplink(ifname.clone()))?;
            Some(Uplink {
                ifname: ifname.clone(),
                gateway_mac,
                pod_network,
                mtu,
                non_masquerade: args.non_masquerade_cidrs.iter().map(ipnet::Ipv4Net::trunc).collect(),
            })
        }
        None => None,
    };
    // Without --uplink-gateway-mac the kernel resolves the default route's gateway; the
    // tracker also keeps the uplink's other next hops (`crate::neighbours`).
    let neighbours = match &uplink {
        Some(u) => Some(Neighbours::start(NeighbourConfig {
            ifname: u.ifname.clone(),
            expiry: std::time::Duration::from_secs(args.neighbour_expiry),
            follow_default_gateway: u.gateway_mac.is_none(),
        })?),
        None => None,
    };
    let (desired, _) = compile::desired_ports(&node, &pods, uplink.as_ref());
    if !args.allow_missing_interfaces {
        if let Some(d) = desired.iter().find(|d| d.kind != PortKind::Host && !iface::exists(&d.ifname)) {
            return Err(StartError::MissingInterface { ifname: d.ifname.clone(), pod: d.key.clone() });
        }
    }

    let mut teardown = Teardown::default();
    let listener = ctl::server::bind(&args.control_socket)?;
    teardown.control_socket(args.control_socket.clone());
    let cfg = dataplane_config(args, control_cores.allowed.clone());
    let host_stack_mac = host_port::ensure(&node, cfg.cores.len() as u32, &args.service_cidrs)?;
    teardown.host_port();
    if super::dnat_return::ensure()? != super::dnat_return::Ensured::NoIptables {
        teardown.dnat_return();
    }
    let state_file = cfg.conntrack_state.clone();
    let dp = Dataplane::start(cfg, Tables::new(naming::GATEWAY_IP))?;
    if let Some(path) = state_file.filter(|_| args.cleanup) {
        teardown.state_file(path);
    }
    let dir = args.manifests.clone().unwrap_or_default();
    let kube_status = match &source {
        Source::Api(src) => Some(src.status_handle()),
        Source::Directory(_) => None,
    };
    let neighbour_reader = neighbours.as_ref().map(Neighbours::reader);
    let shared = Arc::new(Shared::new(dp, Snapshot::empty(node.clone(), dir.clone()), kube_status, neighbour_reader));
    teardown.dataplane(Arc::clone(&shared));

    // kube-proxy's health checks: the proxy's health marks the source's changes from now on;
    // its server (and the Services' health check servers, opened with every apply) runs on a
    // control thread.
    let proxy_health = Arc::new(ProxyHealth::new(crate::health::proxy::DEFAULT_TIMEOUT));
    if let Source::Api(src) = &source {
        let h = Arc::clone(&proxy_health);
        src.on_change(move |c| match c {
            kube_source::SourceChange::Changed => h.queued_update(),
            kube_source::SourceChange::Settled => h.updated(),
        });
    }
    let health = HealthServer::start(args.health.healthz_bind_address.addr(), Arc::clone(&proxy_health))?;

    // L2 announcements: the Leases where the objects come from (the API), else in the shared
    // directory; the thread answers nothing until it holds a Lease.
    let l2 = match (l2_timing, &uplink) {
        (Some((timing, retry_period)), Some(u)) => {
            let store: Box<dyn LeaseStore> = match (&api_config, &args.l2.l2_lease_dir) {
                (Some(cfg), _) => Box::new(KubeLeases::new(cfg.clone(), &args.l2.l2_lease_namespace, retry_period)?),
                (None, Some(dir)) => Box::new(FileLeases::open(dir, &args.l2.l2_lease_namespace)?),
                (None, None) => return Err(L2ArgsError::NoLeaseDir.into()),
            };
            let cfg = AnnounceConfig { node: node.name.clone(), uplink: u.ifname.clone(), timing, retry_period };
            Some(L2Announcer::start(cfg, store).map_err(StartError::L2Announcer)?)
        }
        _ => None,
    };
    shared.set_l2(l2.as_ref().map(L2Announcer::status_handle));

    let resource_versions = matches!(source, Source::Api(_));
    let node_ports = super::nodeport_addresses::resolve_here(&args.nodeport_addresses, node.internal_ip);
    tracing::info!(internal_ip = node_ports.internal_ip, extra = ?node_ports.extra, "NodePorts served on these node addresses");
    let mut sw = Switch::new(Arc::clone(&shared), apply::Config {
        node,
        uplink,
        neighbours,
        host_stack_mac,
        dir,
        resource_versions,
        services: crate::services::ServiceConfig {
            service_cidrs: args.service_cidrs.clone(),
            extra_node_ips: node_ports.extra.clone(),
            internal_ip_serves_node_ports: node_ports.internal_ip,
            ..Default::default()
        },
        uplink_filter: crate::uplink_filter::UplinkConfig {
            vxlan_port: pod_network.vxlan_port(),
            extra_node_ips: node_ports.extra.clone(),
        },
        nodeport_addresses: args.nodeport_addresses.clone(),
        proxy_health,
        health,
        l2,
    });
    // The pods the CNI plugin wired before the switch started are adopted with the first view.
    let mut cni = CniWatch::new(&args.cni_data_dir);
    if let Some(a) = cni.changed() {
        sw.set_cni_pods(a);
    }
    sw.apply(&m)?;
    drop(m);
    // A pod only a CNI record names (its Pod object not here yet) may have gone with its
    // sandbox: its port waits (listed as pending) rather than stopping the start.
    let object_pods: std::collections::BTreeSet<String> = pods.iter().map(model::PodInfo::key).collect();
    let fatal = sw.pending.iter().find(|(k, _)| {
        k.as_str() == compile::HOST_KEY || k.as_str() == compile::UPLINK_KEY || (!args.allow_missing_interfaces && object_pods.contains(k.as_str()))
    });
    if let Some((port, error)) = fatal {
        return Err(StartError::Attach { port: port.clone(), error: error.clone() });
    }
    let n = sw.node();
    println!(
        "podswitch running: node {} (pod CIDR {}, InternalIP {}), {} port(s), workers on cores {:?}{}; {}",
        n.name,
        n.pod_cidr,
        n.internal_ip,
        sw.attached.len(),
        args.cores,
        if args.busy_poll { ", busy polling" } else { "" },
        match &control_cores.control {
            Some(c) => format!("control threads on cores {c:?}"),
            None => "control threads share the workers' cores (no other core is allowed)".to_string(),
        }
    );

    let metrics = match args.metrics.metrics_addr {
        MetricsAddr::Off => None,
        MetricsAddr::At(addr) => {
            let shared = Arc::clone(&shared);
            let provider: metrics::Provider = Arc::new(move || metrics_view::snapshot(&shared));
            Some(metrics::serve(addr, provider).map_err(|source| StartError::Metrics { addr, source })?)
        }
    };
    ctl::server::serve(listener, args.control_socket.clone(), show_handler::handler(Arc::clone(&shared)));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(StartError::Signals)?;
    }
    flows::start_collector(Arc::clone(&shared), Arc::clone(&stop)).map_err(StartError::Collector)?;
    teardown.started(args.cleanup);
    Ok(Running { switch: sw, source, stop, cni, _metrics: metrics, _teardown: teardown })
}

fn dataplane_config(args: &RunArgs, allowed_cores: Vec<usize>) -> DataplaneConfig {
    let pod_umem = super::pod_umem_spec(args.pod_umem_frames);
    match pod_umem {
        Some(u) => tracing::info!(
            rx_frames = u.rx_frames,
            tx_frames = u.tx_frames,
            "each pod port binds on a UMEM of its own: {:.1} MiB locked per pod port (--pod-umem-frames)",
            u.bytes() as f64 / (1 << 20) as f64
        ),
        None => tracing::info!("pod ports share their worker's UMEM (--pod-umem-frames 0)"),
    }
    DataplaneConfig {
        cores: args.cores.clone(),
        busy_poll: args.busy_poll,
        umem: UmemSpec { frames: args.frames, fill_ring: args.rx_ring, ..UmemSpec::default() },
        rx_ring: args.rx_ring,
        pod_umem,
        copy_policy: if args.require_zerocopy { CopyPolicy::RequireZeroCopy } else { CopyPolicy::PreferZeroCopy },
        xdp_mode: args.xdp_mode.map(|m| match m {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        }),
        conntrack_capacity: args.conntrack_size,
        conntrack_state: args.conntrack_state(),
        timeouts: args.conntrack_timeouts.timeouts(),
        allowed_cores: Some(allowed_cores),
        ..DataplaneConfig::default()
    }
}
