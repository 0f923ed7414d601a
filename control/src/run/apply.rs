//! The apply side: turns each view of the Kubernetes objects into tables in force.
//!
//! Contract: one [`Switch`], owned by the thread that receives views (no lock around it).
//! [`Switch::apply`] takes a view in; its cost follows the change:
//! - pods ([`crate::pods`]), Services and NetworkPolicies are read again only where the view
//!   changed; the policy compile is skipped when nothing it reads changed;
//! - the ports (attach, detach, the port part of the tables with its routes) are looked at only
//!   when the pods changed or some port waits for its interface, and then the interface of a
//!   port is looked up (sysfs) only for ports that are new or pending;
//! - a change of this node's own Node object (pod CIDR, InternalIP) is applied live, as the
//!   other nodes' are ([`Switch::follow_own_node`]); from the API, a Node object deleted or
//!   not complete yet leaves the pod CIDR and InternalIP in force, as a problem;
//! - the published tables share every unchanged part with the previous ones.
//!
//! [`Switch::retry_pending`] (every second) attaches ports whose interface appeared and
//! detaches those whose interface went away. After every apply, refusal or retry that changed
//! something the state is published as a [`Snapshot`] for the readers.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How often [`Switch::retry_pending`] looks whether attached ports' interfaces are still there.
const PRESENCE_CHECK_EVERY: Duration = Duration::from_millis(500);

use switch::afxdp::{iface, AfXdpError};
use switch::dataplane::DataplaneError;
use switch::tables::services::ServiceTables;
use switch::tables::policy::PolicyTables;
use switch::dataplane::QueueInfo;
use switch::tables::{PortId, PortKind};

use super::host_port;
use super::nodeport_addresses::{self, NodePortAddress};
use super::shared::{Shared, Snapshot};
use crate::l2announce::L2Announcer;
use crate::compile::{self, Attached, DesiredPort, PortTables, Uplink};
use crate::health::{HealthServer, ProxyHealth};
use crate::manifests::Manifests;
use crate::model::{self, NodeInfo};
use crate::nodes::{self, RemoteNode};
use crate::pod_network::{self, AttachedUplink};
use crate::neighbours::Neighbours;
use crate::side_by_side;
use crate::pods::PodCache;
use crate::policy::{self as netpol, CompiledPolicy, PolicyInputs, PolicyState};
use crate::services::{self, CompiledServices, ServiceConfig, ServiceInputs, ServiceState};
use crate::uplink_filter::{FilterCache, UplinkConfig};

/// Why a view was not applied (the tables in force stay).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Node(#[from] model::NodeError),
    #[error(transparent)]
    Pods(#[from] model::PodError),
}

/// Why a port was not attached (it stays pending, with this as the reason).
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error(transparent)]
    Mac(AfXdpError),
    #[error(transparent)]
    Dataplane(DataplaneError),
}

/// What the apply side starts from.
pub(crate) struct Config {
    pub node: NodeInfo,
    /// The uplink; its `gateway_mac` is the one given (`--uplink-gateway-mac`), else the one
    /// `neighbours` resolved, kept up to date by [`Switch::follow_neighbours_and_announcements`].
    pub uplink: Option<Uplink>,
    /// The uplink's next hops as the kernel resolves them (with an uplink). Dropped with the
    /// switch, which removes the neighbour entries it made.
    pub neighbours: Option<Neighbours>,
    /// MAC of the node's stack side of the host port.
    pub host_stack_mac: [u8; 6],
    /// The manifest directory (empty with the API source).
    pub dir: PathBuf,
    /// Objects carry resourceVersions the compilers may trust (the API source).
    pub resource_versions: bool,
    /// The Service address ranges (`--service-cidr`, unless ServiceCIDR objects say) and
    /// NodePort range.
    pub services: ServiceConfig,
    /// What the uplink's filter takes from the configuration (VXLAN port, node addresses).
    pub uplink_filter: UplinkConfig,
    /// `--nodeport-addresses`, resolved again when this node's InternalIP changes.
    pub nodeport_addresses: Vec<NodePortAddress>,
    /// The proxy's health: told of every view applied and of the node's eligibility.
    pub proxy_health: Arc<ProxyHealth>,
    /// The health check servers, kept in step with the Services of the tables published.
    pub health: HealthServer,
    /// `--l2-announce`: offered the addresses this node may announce with every publish; the
    /// ones it holds are the tables' `uplink_arp` ([`Switch::follow_l2_announcements`]).
    pub l2: Option<L2Announcer>,
}

pub(crate) struct Switch {
    shared: Arc<Shared>,
    cfg: Config,
    pub desired: Vec<DesiredPort>,
    /// The pod generation `desired` and `pod_problems` were made from.
    desired_from: Option<u64>,
    /// Sentences about pods: unreadable ones, and those `desired` cannot wire.
    pod_problems: Vec<String>,
    /// Sentences about the CNI plugin's records that cannot be used.
    cni_problems: Vec<String>,
    /// The other nodes.
    remote: Vec<RemoteNode>,
    /// Sentences about the other nodes not reachable (yet), and the uplink's next hops.
    network_problems: Vec<String>,
    /// The other nodes without routes (their next hop unresolved or unknown).
    unreachable_nodes: Vec<String>,
    /// The next hop on the uplink towards each other node's InternalIP (the kernel's route:
    /// the node itself when on-link, else a gateway), or why there is none.
    node_next_hops: BTreeMap<Ipv4Addr, Result<Ipv4Addr, String>>,
    /// When [`Self::retry_pending`] last looked whether every attached interface is still there.
    presence_checked: Option<Instant>,
    problems: Vec<String>,
    /// Attached ports by key, with their interface.
    pub attached: BTreeMap<String, (Attached, AttachedInterface)>,
    pub pending: BTreeMap<String, String>,
    /// The port part of the tables for `attached`, built again only when that changes.
    port_tables: PortTables,
    pub applied_digest: String,
    /// Bytes of the objects of the view applied ([`crate::manifests::Manifests::footprint`]).
    objects_bytes: u64,
    pub last_error: Option<String>,
    version: u64,
    ignored_kinds: Vec<String>,
    svc_state: ServiceState,
    services: Option<Arc<CompiledServices>>,
    /// The node's own access to NodePorts, LoadBalancer IPs and externalIPs.
    node_local: super::node_local::NodeLocalSync,
    policy_state: PolicyState,
    policy: Option<Arc<CompiledPolicy>>,
    /// Every pod of the view, re-read where it changed.
    pods: PodCache,
    /// Pod names by IP for the readers, and the pod generation they were made from.
    pod_names: (Option<u64>, Arc<BTreeMap<u32, String>>),
    syncs: u64,
    sync_errors: u64,
    last_sync: Option<(std::time::Duration, SystemTime)>,
    /// The gateway MAC was given (`--uplink-gateway-mac`): no neighbour lookup for it.
    gateway_given: bool,
    /// The neighbour snapshot generation the uplink's gateway MAC was taken from.
    neighbours_seen: Option<u64>,
    /// The L2 announcer's generation the tables' `uplink_arp` was taken from.
    l2_seen: Option<u64>,
    /// The frontends and node addresses the L2 announcer was last offered addresses from.
    l2_offered_from: Option<(switch::tables::services::ChunkedList<switch::tables::services::Frontend>, Vec<Ipv4Addr>)>,
    /// The uplink's filter, computed again only when what it reads changed.
    filter_cache: FilterCache,
    /// Why the last write of the uplink's filter failed (shown as a problem until one works).
    filter_error: Option<String>,
    /// The health server's problems last published (ports it cannot bind).
    health_problems: Vec<String>,
    /// Why the host port did not follow the last change of this node's own Node object.
    host_port_error: Option<String>,
}

impl Switch {
    pub fn new(shared: Arc<Shared>, mut cfg: Config) -> Self {
        let rv = cfg.resource_versions;
        let gateway_given = cfg.uplink.as_ref().is_some_and(|u| u.gateway_mac.is_some());
        let mut neighbours_seen = None;
        if let (Some(u), Some(n), false) = (&mut cfg.uplink, &cfg.neighbours, gateway_given) {
            let reader = n.reader();
            neighbours_seen = Some(reader.generation());
            u.gateway_mac = reader.snapshot().gateway_mac();
            log_gateway(u, &reader.snapshot());
        }
        Self {
            shared,
            desired: Vec::new(),
            desired_from: None,
            pod_problems: Vec::new(),
            cni_problems: Vec::new(),
            remote: Vec::new(),
            network_problems: Vec::new(),
            unreachable_nodes: Vec::new(),
            node_next_hops: BTreeMap::new(),
            presence_checked: None,
            problems: Vec::new(),
            attached: BTreeMap::new(),
            pending: BTreeMap::new(),
            port_tables: PortTables::build(&cfg.node, &[], &BTreeMap::new(), cfg.host_stack_mac, cfg.uplink.as_ref()),
            applied_digest: String::new(),
            objects_bytes: 0,
            last_error: None,
            version: 0,
            ignored_kinds: Vec::new(),
            // API objects change resourceVersion with every change: the compilers may trust it.
            svc_state: ServiceState::new(cfg.services.clone()).with_resource_versions(rv),
            node_local: super::node_local::NodeLocalSync::start(cfg.node.clone()),
            services: None,
            policy_state: PolicyState::default(),
            policy: None,
            pods: PodCache::default().with_resource_versions(rv),
            pod_names: (None, Arc::default()),
            syncs: 0,
            sync_errors: 0,
            last_sync: None,
            gateway_given,
            neighbours_seen,
            l2_seen: None,
            l2_offered_from: None,
            filter_cache: FilterCache::default(),
            filter_error: None,
            health_problems: Vec::new(),
            host_port_error: None,
            cfg,
        }
    }

    /// This node's own pod CIDR or InternalIP changed (a Node registered again, a new address):
    /// everything built from them follows, live. The NodePort addresses are resolved again and
    /// the uplink's filter computed again; the host port takes the new address's MAC and routes;
    /// the node's own access to its Services starts again from the new address; the ports and
    /// their routes (the pod CIDR, the masquerade address) are read again by the apply that
    /// called this, which also compiles the Services in full. Connections masqueraded to the old
    /// address are left to time out: nothing answers them at the old address any more.
    fn follow_own_node(&mut self, node: NodeInfo) {
        let old = std::mem::replace(&mut self.cfg.node, node);
        let new = &self.cfg.node;
        tracing::warn!(
            node = %new.name,
            "this node's Node object changed: pod CIDR {} -> {}, InternalIP {} -> {}; applied live",
            old.pod_cidr, new.pod_cidr, old.internal_ip, new.internal_ip
        );
        let ports = nodeport_addresses::resolve_here(&self.cfg.nodeport_addresses, new.internal_ip);
        self.svc_state.set_node_port_addresses(ports.extra.clone(), ports.internal_ip);
        self.cfg.uplink_filter.extra_node_ips = ports.extra;
        self.filter_cache = FilterCache::default();
        let routed: Vec<ipnet::Ipv4Net> = self
            .svc_state
            .config()
            .service_cidrs
            .iter()
            .chain(self.remote.iter().flat_map(|r| r.pod_cidrs.iter()))
            .copied()
            .collect();
        match host_port::renode(&old, new, &routed) {
            Ok(mac) => {
                self.cfg.host_stack_mac = mac;
                self.host_port_error = None;
            }
            Err(e) => {
                let why = format!("the host port did not follow this node's new pod CIDR or InternalIP (restart the switch to build it again): {e}");
                tracing::error!("{why}");
                self.host_port_error = Some(why);
            }
        }
        // The old one's NodePort chain goes with it; the new one writes it again with the
        // Services offered by this apply.
        drop(std::mem::replace(&mut self.node_local, super::node_local::NodeLocalSync::start(new.clone())));
        self.desired_from = None;
    }

    /// Takes in a change of the uplink's resolved next hops (a new neighbour generation: a MAC
    /// found, changed or lost, or a new default gateway): the gateway MAC follows (unless it
    /// was given) and the port tables are built again and published. Cheap when nothing
    /// changed (one atomic load); called by the event loops between views.
    fn follow_neighbours(&mut self) {
        let Some(n) = &self.cfg.neighbours else { return };
        let reader = n.reader();
        let generation = reader.generation();
        if self.neighbours_seen == Some(generation) {
            return;
        }
        self.neighbours_seen = Some(generation);
        let snap = reader.snapshot();
        if let (Some(u), false) = (&mut self.cfg.uplink, self.gateway_given) {
            let mac = snap.gateway_mac();
            if mac != u.gateway_mac {
                u.gateway_mac = mac;
                log_gateway(u, &snap);
            }
        }
        self.rebuild_port_tables();
        self.publish_tables();
        self.publish_snapshot();
    }

    /// What the event loops call between views: the uplink's next hops and the addresses this
    /// node announces, each taken in when it changed.
    pub fn follow_neighbours_and_announcements(&mut self) {
        self.follow_neighbours();
        self.follow_l2_announcements();
    }

    /// Takes in a change of the addresses this node announces (`--l2-announce`): the ARP the
    /// uplink answers. Called with [`Self::follow_neighbours`] between views.
    fn follow_l2_announcements(&mut self) {
        let Some(l2) = &self.cfg.l2 else { return };
        let generation = l2.generation();
        if self.l2_seen == Some(generation) {
            return;
        }
        self.l2_seen = Some(generation);
        self.port_tables.uplink_arp = l2.held();
        self.publish_tables();
        self.publish_snapshot();
    }

    pub fn node(&self) -> &NodeInfo {
        &self.cfg.node
    }

    /// Takes in a view. The consumer of "what changed": the pod cache and the compilers read
    /// the view's changed keys themselves.
    pub fn apply(&mut self, m: &Manifests) -> Result<(), ApplyError> {
        let t0 = Instant::now();
        // This node's own pod CIDR and InternalIP. From the API, a Node object that is gone
        // (deleted to be registered again) or not complete yet changes nothing: what is in force
        // stays, and says why. A change is applied live, as the other nodes' are.
        let (own_node_changed, own_node_missing) = match own_node(m, &self.cfg.node, self.cfg.resource_versions)? {
            OwnNode::Same => (false, None),
            OwnNode::Kept(why) => (false, Some(why)),
            OwnNode::Changed(node) => {
                self.follow_own_node(node);
                (true, None)
            }
        };
        // /healthz: whether load balancers may send to this node (not being deleted, not
        // tainted for deletion); a view without the Node object leaves it eligible.
        let eligible = m.nodes.get(&self.cfg.node.name).is_none_or(|n| crate::health::node_eligible(n));
        if self.cfg.proxy_health.set_node_eligible(eligible) {
            tracing::info!(eligible, "node eligibility for load balancers changed (/healthz)");
        }
        // The other nodes: their routes change with them, live.
        let (remote, node_problems) = nodes::remote_nodes(m, &self.cfg.node);
        let nodes_changed = remote != self.remote;
        if nodes_changed {
            let cidrs = |r: &[RemoteNode]| r.iter().flat_map(|n| n.pod_cidrs.iter().copied()).collect::<Vec<_>>();
            if let Err(e) = host_port::reroute(&self.cfg.node, &cidrs(&self.remote), &cidrs(&remote)) {
                tracing::warn!("routing the other nodes' pod CIDRs to the switch on the host port: {e}");
            }
            tracing::info!(nodes = remote.len(), "other nodes changed");
            self.remote = remote;
            self.find_node_next_hops();
        }
        // The pods step: only the pods that changed are read again, and the ports follow
        // only when some pod did.
        self.pods.update(m);
        let ports_changed = self.desired_from != Some(self.pods.generation());
        if ports_changed {
            let local = self.pods.local_pods(&self.cfg.node).map_err(|e| ApplyError::Pods(e.clone()))?;
            let (desired, mut problems) = compile::desired_ports(&self.cfg.node, &local, self.cfg.uplink.as_ref());
            problems.extend(self.pods.problems());
            self.desired = desired;
            self.pod_problems = problems;
            self.desired_from = Some(self.pods.generation());
        }
        let all_pods = self.pods.all();
        let ranges = services::service_ranges(m, &self.cfg.services.service_cidrs);
        let inputs = ServiceInputs { manifests: m, node: &self.cfg.node, all_pods };
        let policy_inputs = PolicyInputs { manifests: m, node: &self.cfg.node, all_pods };
        let (svc_state, policy_state, node) = (&mut self.svc_state, &mut self.policy_state, &self.cfg.node);
        let pods_generation = self.pods.generation();
        // A whole view (the first, or one that lists no changes) compiles both at once: the
        // policy on a second control thread while the Services compile here.
        let whole_view = self.policy.is_none() || m.changes.is_none();
        let (compiled, policy) = side_by_side::both(
            whole_view,
            || {
                let before = svc_state.config().service_cidrs.clone();
                let ranges_changed = svc_state.set_service_cidrs(ranges);
                if ranges_changed {
                    let now = &svc_state.config().service_cidrs;
                    tracing::info!(?now, ?before, "Service ranges changed (ServiceCIDR objects, else --service-cidr)");
                    if let Err(e) = host_port::reroute(node, &before, now) {
                        tracing::warn!("routing the Service ranges to the switch on the host port: {e}");
                    }
                }
                // New ranges are read against every Service; the node's own address is in
                // every NodePort frontend and every masquerade.
                if ranges_changed || own_node_changed {
                    services::compile_services_full(&inputs, svc_state)
                } else {
                    services::compile_services(&inputs, svc_state)
                }
            },
            || netpol::compile_policy_unless_unchanged(&policy_inputs, pods_generation, policy_state),
        );
        if let Some(c) = policy {
            self.policy = Some(Arc::new(c));
        }
        let mut problems = self.pod_problems.clone();
        problems.extend(self.cni_problems.iter().cloned());
        problems.extend(node_problems);
        problems.extend(own_node_missing);
        problems.extend(compiled.problems.iter().cloned());
        problems.extend(self.policy.iter().flat_map(|p| p.problems.iter().cloned()));
        for p in &problems {
            tracing::warn!("{p}");
        }
        let removed = self.svc_state.removed_endpoints().to_vec();
        problems.extend(self.node_local.problem());
        self.problems = problems;
        self.ignored_kinds.clone_from(&m.ignored);
        self.ignored_kinds.extend(compiled.ignored.iter().cloned());
        let compiled = Arc::new(compiled);
        self.node_local.offer(&compiled);
        self.services = Some(compiled);
        if ports_changed || !self.pending.is_empty() {
            self.reconcile(false);
        } else {
            if nodes_changed {
                self.rebuild_port_tables();
            }
            self.publish_tables();
        }
        // The new tables are in force: no new flow can pick a removed endpoint any more, so its
        // UDP flows can go now rather than linger until they time out.
        if !removed.is_empty() {
            let n = self.shared.dp().flush_udp_endpoints(removed.clone());
            tracing::info!(endpoints = removed.len(), flushed = n, "UDP connections of removed endpoints flushed");
        }
        // The health checks follow the tables now in force.
        if let Some(c) = &self.services {
            self.cfg.health.sync_services(&c.health_checks);
        }
        self.cfg.proxy_health.updated();
        self.applied_digest.clone_from(&m.digest);
        self.objects_bytes = m.footprint.iter().sum();
        self.last_error = None;
        self.syncs += 1;
        self.last_sync = Some((t0.elapsed(), SystemTime::now()));
        self.publish_snapshot();
        Ok(())
    }

    /// Takes in the pods the CNI plugin wired on this node ([`crate::cni_records`]): true when
    /// that changes the pods, and the caller is to apply the view in force again (which wires
    /// or unwires their ports and compiles what reads pods).
    pub fn set_cni_pods(&mut self, a: crate::cni_records::PodAddresses) -> bool {
        self.cni_problems = a.problems;
        self.pods.set_attachments(&self.cfg.node.name, a.pods)
    }

    /// The source has a change the tables do not have yet (the health check's staleness).
    pub fn source_changed(&self) {
        self.cfg.proxy_health.queued_update();
    }

    /// The source says again what the tables in force say (a refused edit was undone).
    pub fn source_in_force(&self) {
        self.cfg.proxy_health.updated();
    }

    /// Records a view that was not applied (counted, shown by `show status`).
    pub fn refused(&mut self, error: String) {
        self.last_error = Some(error);
        self.sync_errors += 1;
        self.publish_snapshot();
    }

    /// A refused view was undone: what is in force is what the source says again.
    pub fn clear_error(&mut self) {
        if self.last_error.take().is_some() {
            self.publish_snapshot();
        }
    }

    /// Reconciles again when some port waits for its interface or an attached one's interface
    /// went away (nothing else changed). Whether every attached interface is still there is
    /// looked at most every [`PRESENCE_CHECK_EVERY`] (one lookup per port: the event loops call
    /// this on every wake-up, several per pod ADD).
    pub fn retry_pending(&mut self) {
        // Health check ports that could not be bound are tried again; what the health server
        // reports (also an address it failed to bind meanwhile) reaches `show status`.
        self.cfg.health.retry();
        if self.cfg.health.problems() != self.health_problems {
            self.publish_snapshot();
        }
        let look = self.presence_checked.is_none_or(|at| at.elapsed() >= PRESENCE_CHECK_EVERY);
        if look {
            self.presence_checked = Some(Instant::now());
        }
        if !self.pending.is_empty() || look && self.attached.values().any(|(_, i)| !i.still_there()) {
            self.reconcile(look);
            self.publish_snapshot();
        }
        if self.node_next_hops.values().any(Result::is_err) {
            self.find_node_next_hops();
            self.rebuild_port_tables();
            self.publish_tables();
            self.publish_snapshot();
        }
    }

    /// Asks the kernel for the next hop towards every other node over the uplink, and has the
    /// neighbour tracker keep those resolved.
    fn find_node_next_hops(&mut self) {
        let (Some(u), Some(n)) = (&self.cfg.uplink, &self.cfg.neighbours) else { return };
        let uplink_index = iface::ifindex(&u.ifname).ok().and_then(|i| u32::try_from(i).ok());
        let mut needs: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
        self.node_next_hops = self
            .remote
            .iter()
            .map(|r| {
                let hop = match crate::neighbours::next_hop_for(r.internal_ip) {
                    Ok(h) if Some(h.ifindex) == uplink_index => {
                        needs.entry(h.addr).or_default().insert(format!("node {}", r.name));
                        Ok(h.addr)
                    }
                    Ok(h) => Err(format!("the kernel routes {} through another interface than {} (index {})", r.internal_ip, u.ifname, h.ifindex)),
                    Err(e) => Err(e.to_string()),
                };
                (r.internal_ip, hop)
            })
            .collect();
        n.set_needed(needs);
    }

    fn free_id(&self) -> PortId {
        let used: BTreeSet<PortId> = self.attached.values().map(|(a, _)| a.id).collect();
        (pod_network::TUNNEL_PORT_ID + 1..).find(|id| !used.contains(id)).expect("fewer ports than ids")
    }

    /// Brings attached ports in line with the desired ones; publishes the tables. Interfaces
    /// are looked up for ports to attach, and for attached ones only with `check_attached`.
    fn reconcile(&mut self, check_attached: bool) {
        let wanted: BTreeMap<&str, &DesiredPort> = self.desired.iter().map(|d| (d.key.as_str(), d)).collect();
        let gone: Vec<String> = self
            .attached
            .iter()
            .filter(|(k, (_, ifname))| {
                wanted.get(k.as_str()).is_none_or(|d| d.ifname != ifname.name) || (check_attached && !ifname.still_there())
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !gone.is_empty() {
            // Routes to these ports go first, then their sockets.
            let removed: Vec<(&String, (Attached, AttachedInterface))> =
                gone.iter().map(|k| (k, self.attached.remove(k).expect("listed above"))).collect();
            self.rebuild_port_tables();
            self.publish_tables();
            for (k, (a, ifname)) in removed {
                if let Err(e) = self.shared.dp().detach_port(a.id) {
                    tracing::error!(port = %k, "detaching {ifname}: {e}");
                }
                tracing::info!(port = %k, interface = %ifname, "port detached");
            }
        }
        self.pending.clear();
        for i in 0..self.desired.len() {
            let d = &self.desired[i];
            if self.attached.contains_key(&d.key) {
                continue;
            }
            if !iface::exists(&d.ifname) {
                self.pending.insert(d.key.clone(), format!("interface {} does not exist (yet)", d.ifname));
                continue;
            }
            let id = if d.key == compile::HOST_KEY { 0 } else { self.free_id() };
            let uplink = d.kind == PortKind::Uplink;
            let t0 = Instant::now();
            let attached = iface::ifindex(&d.ifname).and_then(|index| Ok((index, iface::mac(&d.ifname)?))).map_err(AttachError::Mac).and_then(|(index, mac)| {
                let dp = self.shared.dp();
                // The uplink stays the node's: its program redirects only what the filter (written
                // with the tables below) says the switch owns, nothing before.
                let r = if uplink { dp.attach_uplink(id, &d.ifname) } else { dp.attach_port(id, &d.ifname) };
                r.map(|r| (index, mac, r)).map_err(AttachError::Dataplane)
            });
            match attached {
                Ok((index, mac, r)) => {
                    println!(
                        "port {} ({}): XDP {}{}, {} mode, {} queue(s) ({}){}, attached in {:.1} ms",
                        d.ifname,
                        d.key,
                        r.xdp_mode.as_str(),
                        if uplink { " (filtered: the rest stays the node's)" } else { "" },
                        if r.zerocopy { "zero-copy" } else { "copy" },
                        r.queues.len(),
                        queue_owners(&r.queues),
                        r.native_refused.as_deref().map(|w| format!(" (native refused: {w})")).unwrap_or_default(),
                        t0.elapsed().as_secs_f64() * 1e3
                    );
                    self.attached.insert(d.key.clone(), (Attached { id, mac }, AttachedInterface { name: d.ifname.clone(), index }));
                }
                Err(e) => {
                    tracing::warn!(port = %d.key, "cannot attach {}: {e}", d.ifname);
                    self.pending.insert(d.key.clone(), e.to_string());
                }
            }
        }
        self.rebuild_port_tables();
        self.publish_tables();
    }

    fn rebuild_port_tables(&mut self) {
        let attached: BTreeMap<String, Attached> = self.attached.iter().map(|(k, (a, _))| (k.clone(), *a)).collect();
        self.port_tables = PortTables::build(&self.cfg.node, &self.desired, &attached, self.cfg.host_stack_mac, self.cfg.uplink.as_ref());
        if let Some(l2) = &self.cfg.l2 {
            self.port_tables.uplink_arp = l2.held();
        }
        let before = std::mem::take(&mut self.network_problems);
        if let Some(u) = &self.cfg.uplink {
            let up = attached.get(compile::UPLINK_KEY).map(|a| AttachedUplink { id: a.id, mac: a.mac, mtu: u.mtu });
            let snap = self.cfg.neighbours.as_ref().map(crate::neighbours::Neighbours::snapshot);
            let hops = &self.node_next_hops;
            let mac = |ip: Ipv4Addr| hops.get(&ip)?.as_ref().ok().and_then(|hop| snap.as_ref()?.mac(*hop));
            let unreached = pod_network::add_routes(&mut self.port_tables, &self.cfg.node, u.pod_network, up, &self.remote, &u.non_masquerade, &mac);
            (self.unreachable_nodes, self.network_problems) = unreached.into_iter().map(|n| (n.node, n.why)).unzip();
            for (ip, e) in hops.iter().filter_map(|(ip, h)| h.as_ref().err().map(|e| (ip, e))) {
                self.network_problems.push(format!("no next hop to node address {ip} on the uplink: {e}"));
            }
            if self.network_problems != before {
                for p in &self.network_problems {
                    tracing::warn!("{p}");
                }
            }

        }
    }

    /// Assembles the tables from the parts in hand and puts them in force.
    fn publish_tables(&mut self) {
        self.version += 1;
        let (no_services, no_policy);
        let services = match &self.services {
            Some(c) => &c.tables,
            None => {
                no_services = ServiceTables::default();
                &no_services
            }
        };
        let policy = match &self.policy {
            Some(c) => &c.tables,
            None => {
                no_policy = PolicyTables::default();
                &no_policy
            }
        };
        let t = compile::assemble(compile::Parts { version: self.version, ports: &self.port_tables, services, policy });
        // The addresses this node may announce, read again only when the frontends or the
        // nodes' addresses changed. Every node's address is left out, not only this node's: an
        // externalIP that is another node's InternalIP is that node's kernel's to answer.
        if let Some(l2) = &self.cfg.l2 {
            let node_ips: Vec<Ipv4Addr> = std::iter::once(self.cfg.node.internal_ip)
                .chain(self.cfg.uplink_filter.extra_node_ips.iter().copied())
                .chain(self.remote.iter().map(|r| r.internal_ip))
                .collect();
            if !self.l2_offered_from.as_ref().is_some_and(|(f, ips)| f.ptr_eq(&t.services.frontends) && *ips == node_ips) {
                l2.offer(crate::l2announce::candidates::announceable(&t.services, &node_ips));
                self.l2_offered_from = Some((t.services.frontends.clone(), node_ips));
            }
        }
        let uplink = self.attached.get(compile::UPLINK_KEY).map(|(a, _)| a.id);
        let filter = uplink.map(|_| self.filter_cache.get(&self.cfg.node, &t, &self.cfg.uplink_filter).clone());
        self.shared.dp().publish(t);
        self.shared.changed_now();
        // The tables first: an address the filter starts redirecting is already known to them.
        if let (Some(id), Some(filter)) = (uplink, filter) {
            match self.shared.dp().set_uplink_filter(id, &filter) {
                Ok(()) => self.filter_error = None,
                Err(e) => {
                    tracing::error!("the uplink's filter was not updated (the tables are in force; retried with the next change): {e}");
                    self.filter_error = Some(format!("uplink filter: {e}"));
                }
            }
        }
    }

    fn publish_snapshot(&mut self) {
        self.health_problems = self.cfg.health.problems();
        let generation = self.pods.generation();
        if self.pod_names.0 != Some(generation) {
            self.pod_names = (Some(generation), Arc::new(self.pods.names()));
        }
        self.shared.publish(Snapshot {
            node: self.cfg.node.clone(),
            dir: self.cfg.dir.clone(),
            applied_digest: self.applied_digest.clone(),
            objects_bytes: self.objects_bytes,
            tables_version: self.version,
            ports_wanted: self.desired.len(),
            port_keys: self.attached.iter().map(|(k, (a, _))| (a.id, k.clone())).collect(),
            pending: self.pending.clone(),
            unreachable_nodes: self.unreachable_nodes.clone(),
            problems: self
                .problems
                .iter()
                .chain(&self.network_problems)
                .chain(&self.filter_error)
                .chain(&self.host_port_error)
                .chain(&self.health_problems)
                .cloned()
                .collect(),
            ignored_kinds: self.ignored_kinds.clone(),
            last_error: self.last_error.clone(),
            syncs: self.syncs,
            sync_errors: self.sync_errors,
            last_sync: self.last_sync,
            services: self.services.clone(),
            policy: self.policy.clone(),
            pod_names: Arc::clone(&self.pod_names.1),
            uplink: self.cfg.uplink.clone(),
            gateway_given: self.gateway_given,
        });
    }
}

/// The interface a port was attached to: its name and the index it had then. An interface
/// deleted and made again under the same name (a pod rebuilt with the same name) has another
/// index, and its port is attached again: the old socket was bound to the interface gone.
#[derive(Debug, Clone)]
pub(crate) struct AttachedInterface {
    pub name: String,
    index: i32,
}

impl AttachedInterface {
    fn still_there(&self) -> bool {
        iface::ifindex(&self.name).ok() == Some(self.index)
    }
}

impl std::fmt::Display for AttachedInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// What a view says of this node's own Node object.
#[derive(Debug, PartialEq, Eq)]
enum OwnNode {
    /// The pod CIDR and InternalIP in force.
    Same,
    /// Another pod CIDR or InternalIP, to apply.
    Changed(NodeInfo),
    /// From the API, the Node is gone or not complete (a node registering again): what is in
    /// force stays, and this says why.
    Kept(String),
}

/// Reads this node's own Node object from `m`, where `current` is in force. From the API
/// (`from_api`) a Node object without an IPv4 pod CIDR or InternalIP, or none at all, keeps
/// `current` ([`model::node_info`] would fall back to the lab's defaults, which another node of
/// a real cluster may hold); from a directory the defaults apply, as they do at start.
fn own_node(m: &Manifests, current: &NodeInfo, from_api: bool) -> Result<OwnNode, ApplyError> {
    if from_api {
        if let Some(why) = model::own_node_incomplete(m, &current.name) {
            return Ok(OwnNode::Kept(format!(
                "{why}; this node's pod CIDR {} and InternalIP {} in force stay",
                current.pod_cidr, current.internal_ip
            )));
        }
    }
    let node = model::node_info(m, Some(&current.name)).map_err(|e| ApplyError::Node(e.clone()))?;
    Ok(if node == *current { OwnNode::Same } else { OwnNode::Changed(node) })
}

/// Says whether the default route through the uplink is in the tables, and why not.
fn log_gateway(u: &Uplink, snap: &crate::neighbours::NeighbourSnapshot) {
    match (u.gateway_mac, snap.gateway) {
        (Some(mac), Some(gw)) => {
            tracing::info!(uplink = %u.ifname, "default route to gateway {gw} ({}) in the tables", crate::naming::mac_string(mac));
        }
        (None, Some(gw)) => tracing::warn!(
            uplink = %u.ifname,
            state = snap.entries.get(&gw).map_or("missing", |e| e.state.name()),
            "no default route in the tables until the kernel resolves gateway {gw} (traffic for it is dropped as no_route)"
        ),
        (_, None) => tracing::warn!(
            uplink = %u.ifname,
            "no default route in the tables: the kernel has no default route through the uplink (add one, or give --uplink-gateway-mac)"
        ),
    }
}

/// Which worker serves which queue, as the start-up log says it: `q0 w0 (core 1), q1 w1 (core 2)`.
fn queue_owners(queues: &[QueueInfo]) -> String {
    queues.iter().map(|q| format!("q{} w{} (core {})", q.queue, q.worker, q.core)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(nodes: &str) -> Manifests {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nodes.yaml"), nodes).unwrap();
        crate::manifests::load_dir(dir.path()).unwrap()
    }

    fn node_yaml(name: &str, cidr: Option<&str>, ip: Option<&str>) -> String {
        let spec = cidr.map(|c| format!("spec: {{podCIDR: {c}}}\n")).unwrap_or_default();
        let status = ip.map(|i| format!("status: {{addresses: [{{type: InternalIP, address: {i}}}]}}\n")).unwrap_or_default();
        format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n{spec}{status}---\n")
    }

    fn in_force() -> NodeInfo {
        NodeInfo { name: "n1".into(), pod_cidr: "10.244.1.0/24".parse().unwrap(), internal_ip: "192.0.2.1".parse().unwrap() }
    }

    #[test]
    fn a_changed_pod_cidr_or_internal_ip_is_applied_from_either_source() {
        let other = node_yaml("n2", Some("10.244.2.0/24"), Some("192.0.2.2"));
        for from_api in [false, true] {
            let same = view(&(node_yaml("n1", Some("10.244.1.0/24"), Some("192.0.2.1")) + &other));
            assert_eq!(own_node(&same, &in_force(), from_api).unwrap(), OwnNode::Same);
            let moved = view(&(node_yaml("n1", Some("10.244.7.0/24"), Some("192.0.2.9")) + &other));
            let want = NodeInfo { pod_cidr: "10.244.7.0/24".parse().unwrap(), internal_ip: "192.0.2.9".parse().unwrap(), ..in_force() };
            assert_eq!(own_node(&moved, &in_force(), from_api).unwrap(), OwnNode::Changed(want));
        }
    }

    #[test]
    fn from_the_api_a_node_gone_or_incomplete_keeps_what_is_in_force_and_says_why() {
        let other = node_yaml("n2", Some("10.244.2.0/24"), Some("192.0.2.2"));
        for (nodes, said) in [
            (other.clone(), "no Node object named \"n1\""),
            (String::new(), "no Node object named \"n1\""),
            (node_yaml("n1", None, Some("192.0.2.1")) + &other, "no IPv4 spec.podCIDR"),
            (node_yaml("n1", Some("10.244.1.0/24"), None) + &other, "no IPv4 InternalIP"),
        ] {
            match own_node(&view(&nodes), &in_force(), true).unwrap() {
                OwnNode::Kept(why) => {
                    assert!(why.contains(said) && why.contains("pod CIDR 10.244.1.0/24 and InternalIP 192.0.2.1 in force stay"), "{why}");
                }
                got => panic!("{nodes}: {got:?}"),
            }
        }
        // From a directory, a Node gone while others are there is an error (the view is
        // refused), and no Node at all is the lab's defaults.
        assert!(own_node(&view(&other), &in_force(), false).is_err());
        assert!(matches!(own_node(&view(""), &in_force(), false).unwrap(), OwnNode::Changed(n) if n.internal_ip == model::DEFAULT_INTERNAL_IP));
    }
}
