//! Services: Kubernetes Service and EndpointSlice objects compiled into the switch's
//! [`ServiceTables`], with the semantics of the Kubernetes documentation and kube-proxy.
//!
//! Contract:
//! - [`compile_services`] is a pure function of its inputs and the [`ServiceState`] it is
//!   given, which keeps what must stay stable across recompiles: ClusterIPs and NodePorts it
//!   allocated, Service ids, endpoint ids. Nothing panics on malformed input: a bad Service (or
//!   a bad port of one) is skipped with a sentence in [`CompiledServices::problems`]; the
//!   tables hold everything else.
//! - Frontends, per Service port: the ClusterIP (`clusterIP`, or the IPv4 entry of
//!   `clusterIPs`, else allocated); NodePort (type NodePort, and LoadBalancer unless
//!   `allocateLoadBalancerNodePorts: false` — a `nodePort` set by hand is served either way) on
//!   every node address; every `status.loadBalancer.ingress[].ip` (not `ipMode: Proxy`) of a
//!   LoadBalancer, with `loadBalancerSourceRanges` (checked against every client, pods and
//!   the node included; the LoadBalancer IPs are admitted too when a range holds the node's
//!   InternalIP, as kube-proxy does); every `externalIPs` entry, on any type.
//!   ExternalName, headless and IPv6-only Services get none, nor do Services labelled
//!   `service.kubernetes.io/service-proxy-name` or `service.kubernetes.io/headless` (another
//!   proxy's: kube-proxy's informers leave them out; [`CompiledServices::ignored`] lists them),
//!   and EndpointSlices with those labels are not read.
//! - Health checks: every LoadBalancer Service with `externalTrafficPolicy: Local` in the
//!   tables, with its `healthCheckNodePort` (allocated from the NodePort range, as the API
//!   server does, when it sets none), is listed in [`CompiledServices::health_checks`] with
//!   this node's ready endpoints counted by address (kube-proxy's `LocalReadyEndpoints`),
//!   looking only at those Services.
//! - Endpoints (see [`mod@derive`]): the Service's EndpointSlices (label
//!   `kubernetes.io/service-name`, addressType IPv4), or, when the manifests hold none for a
//!   Service with a selector, the pods it selects as the EndpointSlice controller would.
//! - Sets (kube-proxy's `CategorizeEndpoints`, with topology hints: see `sets.rs`): the
//!   cluster set is the ready endpoints (only those hinted for this node, or else for its zone,
//!   when the hints allow), or the serving+terminating ones when none is ready; the local set is the
//!   local ready endpoints, or the local serving+terminating ones when none of those is ready.
//!   An empty cluster set rejects; an empty local set drops when the Service has usable
//!   endpoints elsewhere and rejects when it has none at all.
//!   - ClusterIP frontend: internal = local set under `internalTrafficPolicy: Local`, else the
//!     cluster set, not masqueraded; external = the same endpoints, masqueraded (off-cluster
//!     traffic to a ClusterIP, as kube-proxy does).
//!   - NodePort, LoadBalancer, externalIP frontends: external = the local set, not
//!     masqueraded, under `externalTrafficPolicy: Local`, else the cluster set, masqueraded.
//!     Internal (pods and the node reaching an external address) = the cluster set whatever
//!     the policies (kube-proxy: such traffic "is subject to neither form of traffic policy"),
//!     masqueraded under `externalTrafficPolicy: Cluster` as kube-proxy's external chain does.
//! - Ids: a Service keeps its `service_id` while its object exists; an endpoint (Service,
//!   Service port name, protocol, endpoint address and port) keeps its `endpoint_id` while it
//!   is listed. Ids are never reused. [`ServiceState::removed_endpoints`] lists the endpoint ids
//!   whose flows could live on after the previous compile and cannot now: in no backend set and
//!   not listed as serving (removed, or no longer serving), so conntrack can flush their UDP
//!   entries at once. A terminating endpoint that still serves keeps its flows, as kube-proxy.
//! - Incremental: [`ServiceState`] keeps what each Service was compiled from and into, and a
//!   compile only redoes the Services whose input changed, looking only at the objects a view
//!   lists as changed when it can (see [`compile`]); the result is
//!   exactly the one a compile of everything gives ([`compile_services_full`]). The tables
//!   share every unchanged part with the previous version, so publishing them is cheap.
pub mod address;
pub mod allocate;
pub mod compile;
pub mod derive;
pub mod fingerprint;
pub mod model;
mod sets;
mod view;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_incremental;
#[cfg(test)]
mod tests_topology;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;
use switch::tables::services::{Frontend, FrontendKind, OnEmpty, ServiceTables};

use switch::tables::chunked::ChunkedList;

pub use compile::{compile_services, compile_services_full};
pub use model::{left_to_other_proxy, ServiceType, TrafficPolicy, HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};

use crate::manifests::Manifests;
use crate::model::{L4Proto, NodeInfo, PodInfo};

/// The Service CIDR kubeadm uses by default (`--service-cidr` changes it).
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// The API server's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// Cluster-wide settings that the API server would hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// `--service-cluster-ip-range` (IPv4 part).
    pub service_cidrs: Vec<Ipv4Net>,
    /// `--service-node-port-range`.
    pub node_port_range: RangeInclusive<u16>,
    /// Node addresses that serve NodePorts besides the node's InternalIP.
    pub extra_node_ips: Vec<Ipv4Addr>,
    /// Whether the node's InternalIP serves NodePorts (`--nodeport-addresses` may leave it out).
    pub internal_ip_serves_node_ports: bool,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            service_cidrs: vec![DEFAULT_SERVICE_CIDR.parse().expect("valid default CIDR")],
            node_port_range: DEFAULT_NODE_PORT_RANGE,
            extra_node_ips: Vec::new(),
            internal_ip_serves_node_ports: true,
        }
    }
}

/// The cluster's Service ranges: the IPv4 CIDRs of its ServiceCIDR objects (Kubernetes 1.33+,
/// in name order, each once) where it has any, else `configured` (`--service-cidr`). A
/// ServiceCIDR that is being deleted still counts: its addresses stay allocated until it goes.
pub fn service_ranges(m: &Manifests, configured: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = Vec::new();
    for c in m.service_cidrs.values() {
        for text in c.spec.iter().flat_map(|s| s.cidrs.iter().flatten()) {
            if let Ok(net) = text.parse::<Ipv4Net>() {
                let net = net.trunc();
                if !out.contains(&net) {
                    out.push(net);
                }
            }
        }
    }
    if out.is_empty() {
        configured.to_vec()
    } else {
        out
    }
}

/// What [`compile_services`] reads.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInputs<'a> {
    pub manifests: &'a Manifests,
    pub node: &'a NodeInfo,
    /// Every pod of the cluster view (any node) with its IP, labels, containerPorts, nodeName;
    /// see [`all_pods`].
    pub all_pods: &'a [PodInfo],
}

/// Every pod of the view as a [`PodInfo`] (hostNetwork pods included: the EndpointSlice
/// controller lists them too); pods that cannot be read are left out with a sentence.
pub fn all_pods(m: &Manifests) -> (Vec<PodInfo>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for pod in m.pods.values() {
        match crate::model::pod_info(pod) {
            Ok(p) => out.push(p),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (out, problems)
}

/// The result of one compile.
#[derive(Debug, Clone, Default)]
pub struct CompiledServices {
    pub tables: ServiceTables,
    /// Sentences naming the object, e.g. `Service x/s: port 80/TCP has targetPort "http" that
    /// pod x/a does not declare; endpoint skipped`. Warnings: the tables hold the rest.
    pub problems: Vec<String>,
    /// One per frontend, in the order of `tables.frontends`, for `podswitch show services`
    /// (shared with the compiler's state: unchanged Services keep their views, and a compile
    /// that replaces some copies only the chunks that hold them).
    pub views: ChunkedList<ServiceView>,
    /// The Services this node answers load balancers' health checks for, in key order.
    pub health_checks: Vec<HealthCheck>,
    /// Services left to another proxy by their labels (`Service ns/name (label ...)`), as
    /// kube-proxy's informers leave them out; in key order.
    pub ignored: Vec<String>,
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` and its `healthCheckNodePort`:
/// what kube-proxy's service health server serves for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub namespace: String,
    pub name: String,
    pub port: u16,
    /// This node's ready endpoints of the Service, counted by address (kube-proxy's
    /// `LocalReadyEndpoints`: an address serving two ports counts once; terminating ones not).
    pub local_endpoints: usize,
}

impl CompiledServices {
    /// Endpoint ids whose flows may live on ([`flows_may_live`]), over every frontend.
    pub fn endpoint_ids(&self) -> BTreeSet<u32> {
        self.tables.frontends.iter().zip(self.views.iter()).flat_map(|(f, v)| flows_may_live(f, v)).collect()
    }
}

/// The endpoint ids of frontend `f` (with its view `v`) whose connections may go on: those in
/// one of its backend sets, and those still listed as serving (a terminating endpoint that
/// still serves keeps its flows although new ones go elsewhere). kube-proxy's rule for UDP
/// conntrack cleanup: entries go when their endpoint stops serving, not when it stops being
/// chosen (pkg/proxy/conntrack/cleanup.go).
pub fn flows_may_live<'a>(f: &'a Frontend, v: &'a ServiceView) -> impl Iterator<Item = u32> + 'a {
    f.internal
        .backends
        .iter()
        .chain(f.external.backends.iter())
        .map(|b| b.endpoint_id)
        .chain(v.endpoints.iter().filter(|e| e.endpoint.serving).map(|e| e.endpoint_id))
}

/// Endpoint ids whose flows may live on in `previous` and not in `current`.
pub fn removed_endpoints(previous: &CompiledServices, current: &CompiledServices) -> Vec<u32> {
    let now = current.endpoint_ids();
    previous.endpoint_ids().into_iter().filter(|id| !now.contains(id)).collect()
}

/// One Service port frontend, for `podswitch show services`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceView {
    /// `namespace/name` of the Service.
    pub service: String,
    /// The frontend's name: `namespace/name:port-name` (`namespace/name` for an unnamed port).
    pub name: String,
    pub service_id: u32,
    pub service_type: ServiceType,
    pub kind: FrontendKind,
    /// `ip:port/proto`.
    pub frontend: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub protocol: L4Proto,
    /// The Service port's `targetPort` (a number or a name).
    pub target_port: String,
    /// `endpointslices`, `selector` or `none`.
    pub endpoints_from: &'static str,
    /// Every endpoint of the Service port, usable or not, with the sets that use it.
    pub endpoints: Vec<EndpointView>,
    pub internal: SetView,
    pub external: SetView,
    pub affinity_timeout_s: Option<u32>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    /// LoadBalancer source ranges; empty means any source.
    pub source_ranges: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SetView {
    pub backends: usize,
    pub on_empty: OnEmpty,
    pub masquerade: bool,
    /// Only this node's endpoints (a `Local` traffic policy).
    pub local_only: bool,
}

/// Serialized with its `address` (`ip:port`) first, written from the endpoint's address rather
/// than kept (24 bytes less for each endpoint of each frontend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub endpoint_id: u32,
    /// Conditions (`ready`, `serving`, `terminating`), `node`, `local` and `source`
    /// (`EndpointSlice ns/name[, pod ns/name]` or `pod ns/name`).
    pub endpoint: derive::Candidate,
    /// In the frontend's internal set.
    pub internal: bool,
    /// In the frontend's external set.
    pub external: bool,
}

impl EndpointView {
    /// `ip:port`.
    pub fn address(&self) -> address::AddressText {
        address::AddressText::new(self.endpoint.ip, self.endpoint.port)
    }
}

impl serde::Serialize for EndpointView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// What `show services` reads of an endpoint (`ctl::replies`).
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            address: address::AddressText,
            endpoint_id: u32,
            #[serde(flatten)]
            endpoint: &'a derive::Candidate,
            internal: bool,
            external: bool,
        }
        Shown { address: self.address(), endpoint_id: self.endpoint_id, endpoint: &self.endpoint, internal: self.internal, external: self.external }
            .serialize(s)
    }
}

/// Key of an endpoint id: Service, Service port name, protocol, endpoint address and port.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EndpointKey {
    pub service: String,
    pub port_name: String,
    pub proto: L4Proto,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// What stays stable across recompiles; see the module contract.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub(crate) config: ServiceConfig,
    /// Allocated ClusterIPs by Service key.
    pub(crate) cluster_ips: BTreeMap<String, Ipv4Addr>,
    /// Allocated NodePorts by (Service key, Service `port` number).
    pub(crate) node_ports: BTreeMap<(String, u16), u16>,
    pub(crate) service_ids: BTreeMap<String, u32>,
    pub(crate) next_service_id: u32,
    pub(crate) next_endpoint_id: u32,
    pub(crate) removed: Vec<u32>,
    /// Fingerprint objects by `metadata.resourceVersion` when they have one.
    pub(crate) resource_versions: bool,
    /// What each Service and EndpointSlice was compiled from and into (endpoint ids included).
    pub(crate) cache: compile::Cache,
}

impl Default for ServiceState {
    fn default() -> Self {
        Self::new(ServiceConfig::default())
    }
}

impl ServiceState {
    pub fn new(config: ServiceConfig) -> Self {
        Self {
            config,
            cluster_ips: BTreeMap::new(),
            node_ports: BTreeMap::new(),
            service_ids: BTreeMap::new(),
            next_service_id: 1,
            next_endpoint_id: 1,
            removed: Vec::new(),
            resource_versions: false,
            cache: compile::Cache::default(),
        }
    }

    /// Whether an object with a `metadata.resourceVersion` is known unchanged by it (objects
    /// from the Kubernetes API, where every change gets a new one) instead of by a hash of the
    /// fields the compiler reads. Off by default: a manifest file may carry a stale one.
    pub fn with_resource_versions(mut self, on: bool) -> Self {
        self.resource_versions = on;
        self
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Replaces the Service ranges; true when they changed, and then the next compile must be
    /// a full one ([`compile_services_full`]: every Service is read against the new ranges;
    /// allocations and endpoint ids are kept).
    pub fn set_service_cidrs(&mut self, cidrs: Vec<Ipv4Net>) -> bool {
        if self.config.service_cidrs == cidrs {
            return false;
        }
        self.config.service_cidrs = cidrs;
        true
    }

    /// Replaces the node addresses that serve NodePorts besides the InternalIP, and whether the
    /// InternalIP does (`--nodeport-addresses` resolved again after this node's InternalIP
    /// changed). The next compile must be a full one, as after [`Self::set_service_cidrs`].
    pub fn set_node_port_addresses(&mut self, extra_node_ips: Vec<Ipv4Addr>, internal_ip_serves: bool) {
        self.config.extra_node_ips = extra_node_ips;
        self.config.internal_ip_serves_node_ports = internal_ip_serves;
    }

    /// Endpoint ids that were in some backend set after the compile before the last one and
    /// are in none after the last one (sorted).
    pub fn removed_endpoints(&self) -> &[u32] {
        &self.removed
    }

    /// The ClusterIP allocated to Service `key` (`namespace/name`), if it did not set one.
    pub fn allocated_cluster_ip(&self, key: &str) -> Option<Ipv4Addr> {
        self.cluster_ips.get(key).copied()
    }

    /// The NodePort allocated to the port numbered `port` of Service `key`.
    pub fn allocated_node_port(&self, key: &str, port: u16) -> Option<u16> {
        self.node_ports.get(&(key.to_string(), port)).copied()
    }

    /// The `healthCheckNodePort` allocated to Service `key`, if it needs one and set none.
    pub fn allocated_health_check_port(&self, key: &str) -> Option<u16> {
        self.node_ports.get(&(key.to_string(), compile::HEALTH_CHECK_PORT_KEY)).copied()
    }

    /// The id of Service `key` while it exists.
    pub fn service_id(&self, key: &str) -> Option<u32> {
        self.service_ids.get(key).copied()
    }
}
